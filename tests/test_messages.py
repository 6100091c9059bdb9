"""Messages people understand (issue #12, part 3), each on the real path: build/pamhost
(real libpam), a real swtpm, syslog captured on a private /dev/log, pinutil run as a
command (root, `nobody`, or on a pseudo-terminal).

- Enter at the PIN prompt goes to the password: no "Invalid PIN.", no attempt spent,
  the next try on the handle still offers the PIN;
- a locked PIN names who can reset it and the command, and that command works;
- `pinutil setup` for an enrolled user names the `change` command for that user, and
  on a terminal says so before asking for anything;
- an unreachable TPM is named (device or socket) with the reason: missing, permission;
- by-design refusals (remote login, not enrolled, PIN already sent, Enter) are logged
  at LOG_INFO/LOG_NOTICE, never LOG_ERR/LOG_WARNING;
- no syslog line and no stderr line of any error path names a Python class.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import syslog
import tempfile

import pytest

from pinutil import errors
from tests.support.pamhost import PAM_ERROR_MSG, prompts, result_name
from tests.support.pin_env import PASSWORD
from tests.test_cli import _run_on_pty, cli  # noqa: F401 - `cli` is a fixture
from tests.test_error_vocabulary import CLASS_NAMES

PIN = "2580"
NEW_PIN = "369147"
WRONG = "1111"
LIMIT = 3
BACKENDS = ("direct", "helper")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def shown(report) -> list[str]:
    return [m["text"] for m in report["messages"] if m["style"] == PAM_ERROR_MSG]


def tpm_pin_lines(capture):
    return [line for line in capture.lines() if "[tpm_pin]" in line.message]


def pin_or_password(env, backend) -> str:
    env.set_password("root", "login")
    return env.service("login", env.tpm_pin_line(backend=backend, control="sufficient"),
                       env.matrix_line("required"))


# ---- Enter at the PIN prompt ------------------------------------------------------------
def test_enter_at_the_pin_prompt_goes_to_the_password(pin_env, backend, syslog_capture):
    pin_env.enrol("root", PIN)
    svc = pin_or_password(pin_env, backend)
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=["", PASSWORD])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: ", "Password: "]
    assert shown(report) == []  # no "Invalid PIN."
    assert pin_env.counter("root") == (0, LIMIT)
    assert [line.severity for line in tpm_pin_lines(syslog_capture)] == [syslog.LOG_INFO]


def test_enter_spends_nothing_and_the_next_try_still_offers_the_pin(pin_env, backend):
    """sudo retries on one handle: after Enter, the PIN is offered again (nothing sent)."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sudo", pin_env.tpm_pin_line(backend=backend))
    report = pin_env.run(svc, user="root", answers=["", PIN], stages=("auth", "auth"))
    assert [s["rc"] for s in report["stages"]] == [errors.PAM_AUTHINFO_UNAVAIL, 0]
    assert prompts(report) == ["PIN: ", "PIN: "] and shown(report) == []
    assert pin_env.counter("root") == (0, LIMIT)


# ---- a locked PIN ------------------------------------------------------------------------
def test_a_locked_pin_says_who_can_reset_it_and_that_command_works(pin_env, backend):
    pin_env.enrol("root", PIN)
    for _ in range(LIMIT):
        assert pin_env.pinutil("--stdin", "test", "root", stdin=WRONG + "\n").returncode == 7
    svc = pin_or_password(pin_env, backend)
    report = pin_env.run(svc, user="root", answers=[PASSWORD])
    assert result_name(report, "auth") == "PAM_SUCCESS"  # the password, after the notice
    [message] = shown(report)
    assert "Use your password" in message
    command = re.search(r"Root can reset the PIN with: (pinutil change root)$", message)
    assert command, message
    # The command given is the real one: root runs it, the new PIN works.
    done = pin_env.pinutil("--stdin", *command.group(1).split()[1:], stdin=NEW_PIN + "\n")
    assert done.returncode == 0, done.stderr
    report = pin_env.run(svc, user="root", answers=[NEW_PIN])
    assert result_name(report, "auth") == "PAM_SUCCESS" and prompts(report) == ["PIN: "]


# ---- setup for an enrolled user ----------------------------------------------------------
def test_setup_for_an_enrolled_user_names_change_for_that_user(pin_env):
    pin_env.enrol("daemon", PIN)
    done = pin_env.pinutil("--json", "--stdin", "setup", "daemon", stdin=NEW_PIN + "\n")
    assert done.returncode == 12
    out = json.loads(done.stdout)
    assert out["result"] == "already_enrolled"
    assert "`pinutil change daemon`" in out["error"]
    assert "`pinutil change daemon`" in done.stderr.decode()
    # Followed, it works, and the old PIN is gone.
    done = pin_env.pinutil("--stdin", "change", "daemon", stdin=NEW_PIN + "\n")
    assert done.returncode == 0, done.stderr
    assert pin_env.pinutil("--stdin", "test", "daemon", stdin=NEW_PIN + "\n").returncode == 0


def test_setup_on_a_terminal_says_so_before_asking_for_a_pin(cli):  # noqa: F811
    cli.enrol("root")
    code, screen = _run_on_pty(cli, ["setup"], [NEW_PIN.encode() + b"\n"] * 2)
    assert code == 12, screen
    assert b"New PIN:" not in screen  # nothing asked in vain
    assert b"to replace it, run `pinutil change`" in screen


# ---- an unreachable TPM ------------------------------------------------------------------
def test_a_missing_tpm_device_is_named_with_the_reason(pin_env, backend, syslog_capture):
    pin_env.enrol("root", PIN)
    device = os.path.join(pin_env.dir, "no-such-dir", "tpmrm0")
    pin_env.write_policy(tcti=f"device:{device}")
    svc = pin_or_password(pin_env, backend)
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[PASSWORD])
    assert result_name(report, "auth") == "PAM_SUCCESS" and prompts(report) == ["Password: "]
    [line] = tpm_pin_lines(syslog_capture)
    assert f"{device} does not exist" in line.message, line.message
    assert "no TPM, or its driver is not loaded" in line.message
    assert line.severity == syslog.LOG_ERR  # an administrator's problem: the TPM is gone


@pytest.fixture
def private_tpm_node():
    """A character device root:root 0600 named tpmrm0 (a copy of /dev/null's numbers):
    what a TPM looks like to a user outside its group."""
    tmp = tempfile.mkdtemp(prefix="pypam-tpmnode-", dir="/tmp")
    os.chmod(tmp, 0o755)
    node = os.path.join(tmp, "tpmrm0")
    os.mknod(node, 0o600 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    os.chmod(node, 0o600)
    try:
        yield node
    finally:
        shutil.rmtree(tmp)


def test_a_tpm_device_without_permission_is_named_with_the_reason(cli, private_tpm_node):  # noqa: F811
    cli.write_policy(tcti=f"device:{private_tpm_node}")
    done = cli.run("status", as_nobody=True)
    assert done.returncode == errors.EXIT_UNAVAILABLE, done.stderr
    err = done.stderr.decode()
    assert f"permission denied: {private_tpm_node} is root:root 0600" in err, err
    assert "uid 65534" in err and not CLASS_NAMES.search(err)


# ---- by-design refusals are not errors; no class names anywhere -------------------------
BY_DESIGN = {
    "remote": {"items": {"rhost": "203.0.113.7"}, "answers": []},
    "not_enrolled": {"enrol": False, "answers": []},
    "pin_already_sent": {"answers": [WRONG], "stages": ("auth", "auth")},
    "enter": {"answers": [""]},
}


@pytest.mark.parametrize("case", BY_DESIGN, ids=list(BY_DESIGN))
def test_by_design_refusals_are_logged_as_info_or_notice(pin_env, backend, syslog_capture,
                                                         case):
    spec = dict(BY_DESIGN[case])
    if spec.pop("enrol", True):
        pin_env.enrol("root", PIN)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
    syslog_capture.run_pam(pin_env.pamd, svc, user="root", **spec)
    refusals = [line for line in tpm_pin_lines(syslog_capture)
                if "wrong PIN" not in line.message and "[wrong_pin]" not in line.message]
    assert refusals, syslog_capture.messages()
    for line in refusals:
        assert line.severity in (syslog.LOG_INFO, syslog.LOG_NOTICE), line.raw


ERROR_PATHS = {
    "not_enrolled": {"enrol": False},
    "remote": {"items": {"rhost": "203.0.113.7"}},
    "enter": {"answers": [""]},
    "invalid_pin": {"answers": ["12a4"]},
    "wrong_pin": {"answers": [WRONG]},
    "pin_already_sent": {"answers": [WRONG], "stages": ("auth", "auth")},
    "locked": {"lock": True},
    "unknown_user": {"user": "no-such-user-here"},
    "policy_error": {"policy": "pin_min_length = many\n"},
    "tpm_missing": {"tcti": "device:/tmp/pypam-no-such-dir/tpmrm0"},
    "tpm_stopped": {"tcti": "swtpm:path=/tmp/pypam-no-such-tpm/sock"},
    "enrolment_mismatch": {"drop_record": True},
}


@pytest.mark.parametrize("case", ERROR_PATHS, ids=list(ERROR_PATHS))
def test_no_log_or_stderr_line_of_an_error_path_names_a_python_class(
        pin_env, backend, syslog_capture, case):
    spec = dict(ERROR_PATHS[case])
    if spec.pop("enrol", True):
        pin_env.enrol("root", PIN)
    if spec.pop("lock", False):
        for _ in range(LIMIT):
            pin_env.pinutil("--stdin", "test", "root", stdin=WRONG + "\n")
    if spec.pop("drop_record", False):
        shutil.rmtree(pin_env.enrolment_dir)
    if "tcti" in spec:
        pin_env.write_policy(tcti=spec.pop("tcti"))
    if "policy" in spec:
        with open(pin_env.policy, "a", encoding="utf-8") as f:
            f.write(spec.pop("policy"))
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
    report = syslog_capture.run_pam(pin_env.pamd, svc, user=spec.pop("user", "root"),
                                    answers=spec.pop("answers", [PIN]), **spec)
    assert result_name(report, "auth") != "PAM_SUCCESS"
    text = "\n".join([*syslog_capture.messages(), report["stderr"], *shown(report)])
    assert tpm_pin_lines(syslog_capture), text
    assert not CLASS_NAMES.search(text), text
    # pinutil itself, on the same situation, as the helper runs it.
    if case not in ("remote", "pin_already_sent", "enter", "unknown_user"):
        done = pin_env.pinutil("--json", "--stdin", "test", "root", stdin="1111\n")
        assert done.returncode != 0
        assert not CLASS_NAMES.search(done.stderr.decode() + done.stdout.decode())
