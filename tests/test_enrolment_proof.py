"""The enrolment proof (issue 9, finding 1): a user enrolling their own PIN first proves
the account password through the PAM service `pinutil`; root enrols anyone without.

Real parts only: the set-gid-tss launcher copy, run with setpriv as a test user that
exists only in a private mount namespace (tests/support/accounts.py), the shipped
examples/pam.d/pinutil bind-mounted as /etc/pam.d/pinutil, the real pam_unix and
unix_chkpwd reading a private /etc/shadow, a real swtpm. `other` permits everything in
that pam.d, so a pinutil that fell back to it would enrol anyone. Every setup, change
and delete must leave a LOG_AUTHPRIV line naming who, for whom and the result.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.service.enrol_support import PASSWORD, PIN, PIN2, UID, USER
from tests.support.accounts import setgid_tss_launcher
from tests.support.pin_env import NV_BASE
from tests.support.syslog_capture import AUTHPRIV
from tests.support.terminal import answer_on_terminal

HANDLE = NV_BASE + UID
LIMIT = 3
AUTHPRIV_NOTICE, AUTHPRIV_WARNING = (AUTHPRIV, 5), (AUTHPRIV, 4)


@pytest.fixture
def enrol_env(pin_env, accounts):
    accounts.add_user(USER, UID, PASSWORD)
    pin_env.launcher = setgid_tss_launcher(pin_env)
    return pin_env, accounts


def pinutil(env, accounts, syslog_capture, *args, stdin="", as_root=False):
    """The set-gid launcher inside the namespace, as the test user (or root)."""
    who = [] if as_root else accounts.as_user(UID)
    syslog_capture.clear()
    done = subprocess.run([*accounts.prefix(), *who, env.launcher, "--json", "--stdin", *args],
                          input=stdin.encode(), capture_output=True, timeout=60, check=False,
                          env={}, cwd="/")
    syslog_capture.sync()
    return done


def answer(done) -> dict:
    return json.loads(done.stdout.decode().splitlines()[-1])


def audit_lines(syslog_capture) -> list[tuple[tuple[int, int], str]]:
    """((facility, severity), message) of pinutil's own lines."""
    return [((line.facility, line.severity), line.message) for line in syslog_capture.lines()
            if line.ident == "pinutil"]


def by_user(action: str, result: str) -> str:
    return f"{action} by {USER} (uid {UID}) for {USER} (uid {UID}): {result}"


@pytest.mark.parametrize("stdin", [f"{PIN}\n", f"{PIN}\n{PIN}\n", f"wrong password\n{PIN}\n"],
                         ids=["pin_only", "pin_twice", "wrong_password"])
def test_user_setup_without_the_password_is_refused(enrol_env, syslog_capture, stdin):
    env, accounts = enrol_env
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=stdin)
    assert done.returncode == 7, done.stderr
    assert answer(done)["result"] == "wrong_password"
    assert HANDLE not in env.enrolled_handles()  # the TPM was never touched
    assert audit_lines(syslog_capture) == [(AUTHPRIV_WARNING, by_user("setup", "wrong_password"))]


def test_user_setup_with_the_password_enrols(enrol_env, syslog_capture):
    env, accounts = enrol_env
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode == 0, done.stderr
    assert answer(done)["result"] == "success"
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
    assert audit_lines(syslog_capture) == [(AUTHPRIV_NOTICE, by_user("setup", "success"))]
    assert PASSWORD not in syslog_capture.text() and PIN not in syslog_capture.text()

    # The PIN works (test), then change (old PIN, no password) and delete (the PIN).
    assert pinutil(env, accounts, syslog_capture, "test", stdin=f"{PIN}\n").returncode == 0
    done = pinutil(env, accounts, syslog_capture, "change", stdin=f"{PIN}\n{PIN2}\n")
    assert done.returncode == 0, done.stderr
    assert audit_lines(syslog_capture) == [(AUTHPRIV_NOTICE, by_user("change", "success"))]
    done = pinutil(env, accounts, syslog_capture, "change", stdin=f"{PIN}\n{PIN}\n")
    assert done.returncode == 7
    assert audit_lines(syslog_capture) == [(AUTHPRIV_WARNING, by_user("change", "wrong_pin"))]
    done = pinutil(env, accounts, syslog_capture, "delete", stdin=f"{PIN2}\n")
    assert done.returncode == 0, done.stderr
    assert HANDLE not in env.enrolled_handles()
    assert audit_lines(syslog_capture) == [(AUTHPRIV_NOTICE, by_user("delete", "success"))]


def test_user_refused_on_another_user_is_logged(enrol_env, syslog_capture):
    env, accounts = enrol_env
    done = pinutil(env, accounts, syslog_capture, "setup", "root", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode == 6
    assert NV_BASE not in env.enrolled_handles()
    assert audit_lines(syslog_capture) == [
        (AUTHPRIV_WARNING, f"setup by {USER} (uid {UID}) for root (uid 0): permission_denied")]


def test_root_enrols_anyone_without_a_password(enrol_env, syslog_capture):
    env, accounts = enrol_env
    done = pinutil(env, accounts, syslog_capture, "setup", USER, stdin=f"{PIN}\n", as_root=True)
    assert done.returncode == 0, done.stderr
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
    assert audit_lines(syslog_capture) == [
        (AUTHPRIV_NOTICE, f"setup by root (uid 0) for {USER} (uid {UID}): success")]
    done = pinutil(env, accounts, syslog_capture, "--yes", "delete", USER, as_root=True)
    assert done.returncode == 0, done.stderr
    assert audit_lines(syslog_capture) == [
        (AUTHPRIV_NOTICE, f"delete by root (uid 0) for {USER} (uid {UID}): success")]


def test_absent_service_file_is_refused_not_other(enrol_env, syslog_capture):
    env, accounts = enrol_env
    accounts.remove_service("pinutil")  # `other` permits everything
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode == 6
    assert answer(done)["result"] == "permission_denied"
    assert "/etc/pam.d/pinutil is missing" in done.stderr.decode()
    assert HANDLE not in env.enrolled_handles()
    assert audit_lines(syslog_capture) == [(AUTHPRIV_WARNING,
                                            by_user("setup", "permission_denied"))]
    # Root is unaffected.
    done = pinutil(env, accounts, syslog_capture, "setup", USER, stdin=f"{PIN}\n", as_root=True)
    assert done.returncode == 0, done.stderr


def test_the_proof_uses_the_pinutil_service_not_the_pin(enrol_env, syslog_capture):
    """A pinutil service that only says no: even the right password cannot enrol."""
    env, accounts = enrol_env
    accounts.write_service("pinutil", "auth required pam_deny.so\naccount required pam_deny.so\n")
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode == 7 and answer(done)["result"] == "wrong_password"
    assert HANDLE not in env.enrolled_handles()


def test_interactive_setup_asks_the_password_on_the_terminal_without_echo(enrol_env,
                                                                          syslog_capture):
    """The conversation on /dev/tty: pam_unix's prompt, then the PIN twice, no echo."""
    env, accounts = enrol_env
    code, shown = answer_on_terminal(
        [*accounts.prefix(), *accounts.as_user(UID), env.launcher, "setup"],
        [PASSWORD, PIN, PIN], {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert code == 0, shown
    assert shown.index(b"Password:") < shown.index(b"New PIN:") < shown.index(b"Repeat the PIN:")
    assert PASSWORD.encode() not in shown and PIN.encode() not in shown  # echo was off
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
