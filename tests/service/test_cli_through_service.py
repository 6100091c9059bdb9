"""`pinutil` through pinutild needs no set-id bit: a plain copy of the launcher
(0755, not set-gid), run by an ordinary uid that cannot reach the TPM nor the
enrolment records, enrols its own PIN with its password (pam_unix, relayed by the
service), changes it, and the user then logs in with it through real libpam
(`tpm_pin backend=auto`, the service's socket exists). The same copy without the
service cannot do any of it. The audit lines are the service's, one per command."""
from __future__ import annotations

import json
import subprocess

from tests.service.enrol_support import (
    PASSWORD,
    PIN,
    PIN2,
    UID,
    USER,
    as_user,
    running_in_namespace,
)
from tests.support.pamhost import result_name
from tests.support.pin_env import NV_BASE
from tests.support.terminal import answer_on_terminal

HANDLE = NV_BASE + UID


def run(accounts, launcher, *args, stdin=""):
    done = subprocess.run([*accounts.prefix(), *as_user(), launcher, "--json", "--stdin",
                           *args], input=stdin.encode(), capture_output=True, timeout=120,
                          check=False, env={}, cwd="/")
    return done, json.loads(done.stdout.decode().splitlines()[-1])


def audit(syslog_capture) -> list[str]:
    syslog_capture.sync()
    return [line.message for line in syslog_capture.lines() if line.ident == "pinutil"]


def test_without_the_service_the_plain_copy_cannot_enrol(pin_env, accounts, plain):
    done, answer = run(accounts, plain, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode != 0 and answer["result"] != "success"
    assert HANDLE not in pin_env.enrolled_handles()


def test_a_plain_copy_enrols_through_the_service_and_the_user_logs_in(
        pin_env, accounts, plain, syslog_capture):
    with running_in_namespace(pin_env, accounts) as service:
        pin_env.policy_extra["service_socket"] = service.socket
        pin_env.write_policy()
        syslog_capture.clear()
        done, answer = run(accounts, plain, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
        assert done.returncode == 0, (done.stderr, service.output())
        assert answer["result"] == "success" and answer["limit"] == 3
        assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
        setup_line = f"setup by {USER} (uid {UID}) for {USER} (uid {UID}): success"
        assert audit(syslog_capture) == [setup_line]  # once: the service's

        done, answer = run(accounts, plain, "status")
        assert answer["enrolled"] is True and answer["record"] == "ok", answer
        done, answer = run(accounts, plain, "test", stdin=f"{PIN}\n")
        assert done.returncode == 0 and answer["attempts_left"] == 3, answer
        done, answer = run(accounts, plain, "change", stdin=f"{PIN}\n{PIN2}\n")
        assert done.returncode == 0, done.stderr

        # The login: real libpam, tpm_pin through the service (backend=auto: its
        # socket exists), the PAM host run by the user, as a screen locker is.
        stack = pin_env.service("unlock", pin_env.tpm_pin_line(backend="auto"))
        report = pin_env.run(stack, user=USER, answers=[PIN2],
                             prefix=[*accounts.prefix(), *as_user()])
        assert result_name(report, "auth") == "PAM_SUCCESS", report
        wrong = pin_env.run(stack, user=USER, answers=[PIN],
                            prefix=[*accounts.prefix(), *as_user()])
        assert result_name(wrong, "auth") == "PAM_AUTH_ERR", wrong

        # A wrong password: nothing enrolled after a delete.
        done, answer = run(accounts, plain, "delete", stdin=f"{PIN2}\n")
        assert done.returncode == 0, done.stderr
        done, answer = run(accounts, plain, "setup", stdin=f"not it\n{PIN}\n")
        assert done.returncode == 7 and answer["result"] == "wrong_password"
        assert HANDLE not in pin_env.enrolled_handles()


def test_interactive_setup_through_the_service_asks_on_the_terminal(pin_env, accounts, plain):
    """On a terminal: pam_unix's prompt (relayed by the service), then the PIN twice,
    no echo; the same order as the set-gid path's."""
    with running_in_namespace(pin_env, accounts) as service:
        pin_env.policy_extra["service_socket"] = service.socket
        pin_env.write_policy()
        code, shown = answer_on_terminal([*accounts.prefix(), *as_user(), plain, "setup"],
                                         [PASSWORD, PIN, PIN],
                                         {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert code == 0, (shown, service.output())
        assert shown.index(b"Password:") < shown.index(b"New PIN:") < \
            shown.index(b"Repeat the PIN:")
        assert PASSWORD.encode() not in shown and PIN.encode() not in shown
        assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
