"""Enrolment records (issue 9, finding 4): a reused uid does not inherit a PIN.

The PIN index is nv_base + uid. pinutil setup writes <enrolment_dir>/<uid> naming the
uid, the user name, the index and the time; a login offers the PIN only when the
record names the account logging in. Here a user is enrolled, deleted like `userdel`
does (the TPM index stays), and a new user gets the same uid: no PIN prompt for the
new user, PAM_AUTHINFO_UNAVAIL, a syslog line that says why, and the old owner's PIN
counter untouched. Accounts exist only in a private mount namespace
(tests/support/accounts.py); logins run through real libpam (build/pamhost).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.accounts import setgid_tss_launcher
from tests.support.pamhost import prompts, result_name
from tests.support.pin_env import NV_BASE, PINUTIL
from tests.test_pin_index import _define_like_pinpam

OLD, NEW, UID = "pinutilold", "pinutilnew", 4243
HANDLE = NV_BASE + UID
PIN = "2580"
LIMIT = 3
BACKENDS = ("direct", "helper")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def root_pinutil(env, accounts, *args, stdin=""):
    """build/pinutil as root inside the namespace (the accounts exist only there)."""
    return subprocess.run([*accounts.prefix(), PINUTIL, "--policy", env.policy, "--json",
                           "--stdin", *args], input=stdin.encode(), capture_output=True,
                          timeout=60, check=False, env={}, cwd="/")


def login(env, accounts, syslog_capture, svc, user, answers):
    report = syslog_capture.run_pam(env.pamd, svc, user=user, answers=answers,
                                    prefix=accounts.prefix()[len(syslog_capture.prefix):])
    assert report["exit_status"] == 0 and report["stderr"] == "", report["stderr"]
    return report


def record_path(env) -> str:
    return os.path.join(env.enrolment_dir, str(UID))


def test_reused_uid_gets_no_pin_prompt(pin_env, accounts, syslog_capture, backend):
    accounts.add_user(OLD, UID, "old password")
    done = root_pinutil(pin_env, accounts, "setup", OLD, stdin=PIN + "\n")
    assert done.returncode == 0, done.stderr
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend))
    # control: the old owner's PIN works for the old owner
    report = login(pin_env, accounts, syslog_capture, svc, OLD, [PIN])
    assert result_name(report, "auth") == "PAM_SUCCESS"

    accounts.remove_user(OLD)  # userdel: the TPM index stays behind
    accounts.add_user(NEW, UID, "new password")
    report = login(pin_env, accounts, syslog_capture, svc, NEW, [PIN])
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # no PIN prompt, no message
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
    text = syslog_capture.text()
    assert f"enrolled for {OLD} (uid {UID})" in text and f"not for {NEW}" in text, text

    # status shows the record and the mismatch; delete clears both.
    done = root_pinutil(pin_env, accounts, "status", NEW)
    status = json.loads(done.stdout)
    assert status["enrolled"] and status["record"] == "mismatch"
    assert f"enrolled for {OLD}" in status["record_problem"]
    done = root_pinutil(pin_env, accounts, "--yes", "delete", NEW)
    assert done.returncode == 0, done.stderr
    assert HANDLE not in pin_env.enrolled_handles()
    assert not os.path.exists(record_path(pin_env))


def test_status_shows_the_record_and_delete_clears_it(pin_env, accounts):
    accounts.add_user(OLD, UID, "old password")
    assert root_pinutil(pin_env, accounts, "setup", OLD, stdin=PIN + "\n").returncode == 0
    with open(record_path(pin_env)) as f:
        assert f.read().startswith(f"uid={UID}\nuser={OLD}\nnv_index=0x{HANDLE:08x}\nenrolled=")
    st = os.stat(pin_env.enrolment_dir)
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (0, "0o770")
    status = json.loads(root_pinutil(pin_env, accounts, "status", OLD).stdout)
    assert status["record"] == "ok"
    assert status["enrolled_by"]["user"] == OLD and status["enrolled_by"]["uid"] == UID
    assert status["enrolled_by"]["nv_index"] == f"0x{HANDLE:08x}"
    done = root_pinutil(pin_env, accounts, "--yes", "delete", OLD)
    assert done.returncode == 0
    assert not os.path.exists(record_path(pin_env))


def test_index_without_a_record_is_not_offered_until_root_adopts_it(pin_env, backend,
                                                                       syslog_capture):
    """An index made the way pinpam makes it (tpm2-tools) has no record."""
    _define_like_pinpam(pin_env.swtpm, NV_BASE, PIN.encode(), LIMIT)
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend))
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[PIN])
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert "pinutil adopt root" in syslog_capture.text()
    done = pin_env.pinutil("--stdin", "test", "root", stdin=PIN + "\n")
    assert done.returncode == 9 and json.loads(done.stdout)["result"] == "enrolment_mismatch"
    assert pin_env.counter("root") == (0, LIMIT)

    done = pin_env.pinutil("--json", "adopt", "root")
    assert done.returncode == 0, done.stderr
    report = pin_env.run(svc, user="root", answers=[PIN])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: "]


BAD_RECORDS = {
    "world_writable_dir": lambda env: os.chmod(env.enrolment_dir, 0o777),
    # Others get no access at all: not to list who is enrolled, nor to reach a record.
    "dir_readable_by_others": lambda env: os.chmod(env.enrolment_dir, 0o774),
    "dir_searchable_by_others": lambda env: os.chmod(env.enrolment_dir, 0o771),
    "group_writable_record": lambda env: os.chmod(os.path.join(env.enrolment_dir, "0"), 0o660),
    "record_owned_by_another_user": lambda env: os.chown(os.path.join(env.enrolment_dir, "0"),
                                                         65534, 0),
    "symlinked_record": lambda env: _symlink_record(env),
    "other_name": lambda env: _rewrite_record(env, "user=root", "user=daemon"),
    "other_index": lambda env: _rewrite_record(env, "nv_index=0x01000000",
                                               "nv_index=0x01000001"),
    "garbage": lambda env: _rewrite_record(env, "uid=0", "uid=zero"),
}


def _rewrite_record(env, old, new):
    path = os.path.join(env.enrolment_dir, "0")
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def _symlink_record(env):
    path = os.path.join(env.enrolment_dir, "0")
    os.rename(path, path + ".real")
    os.symlink(path + ".real", path)


@pytest.mark.parametrize("spoil", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_untrustworthy_record_means_no_pin(pin_env, backend, spoil):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend))
    assert result_name(pin_env.run(svc, user="root", answers=[PIN]), "auth") == "PAM_SUCCESS"
    spoil(pin_env)
    report = pin_env.run(svc, user="root", answers=[PIN])
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert pin_env.counter("root") == (0, LIMIT)


def test_a_reused_uid_cannot_change_the_old_owners_pin_into_its_own(pin_env, accounts):
    """The new owner of a reused uid, without root, typing the old owner's PIN (who may
    be the one at the keyboard, or code running as the new user): `change` sends no PIN
    to an index not recorded as theirs. Otherwise it would give the new account a PIN
    login without its password (the enrolment proof bypassed)."""
    accounts.add_user(OLD, UID, "old password")
    assert root_pinutil(pin_env, accounts, "setup", OLD, stdin=PIN + "\n").returncode == 0
    accounts.remove_user(OLD)  # userdel: the TPM index stays behind
    accounts.add_user(NEW, UID, "new password")
    launcher = setgid_tss_launcher(pin_env)
    stdin = f"{PIN}\n739146\n"
    done = subprocess.run([*accounts.prefix(), *accounts.as_user(UID), launcher, "--json",
                           "--stdin", "change"], input=stdin.encode(), capture_output=True,
                          timeout=60, check=False, env={}, cwd="/")
    assert done.returncode == 9, done.stderr
    assert json.loads(done.stdout.decode().splitlines()[-1])["result"] == "enrolment_mismatch"
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)  # nothing sent, nothing spent
    with open(record_path(pin_env)) as f:
        assert f"user={OLD}\n" in f.read()  # the index is still the old owner's
    # and a wrong PIN spends nothing either
    done = subprocess.run([*accounts.prefix(), *accounts.as_user(UID), launcher, "--json",
                           "--stdin", "change"], input=stdin.replace(PIN, "0000", 1).encode(),
                          capture_output=True, timeout=60, check=False, env={}, cwd="/")
    assert done.returncode == 9, done.stderr
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
