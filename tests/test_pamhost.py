"""Tests of the test host itself, using only Linux-PAM's and pam_wrapper's modules.

If these fail, no other PAM test result means anything.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.pamhost import (
    PAM_ABORT,
    PAM_AUTH_ERR,
    PAM_AUTHTOK_ERR,
    PAM_CONV_ERR,
    PAM_PROMPT_ECHO_OFF,
    PAM_PROMPT_ECHO_ON,
    PAM_SUCCESS,
    PAM_TEXT_INFO,
    PAM_WRAPPER_DIR,
    PamHostError,
    build_host,
    prompts,
    result_code,
    result_name,
    run_pam,
)

MATRIX = os.path.join(PAM_WRAPPER_DIR, "pam_matrix.so")
SERVICE = "hosttest"


@pytest.fixture
def permit(pam_confdir):
    pam_confdir.write(SERVICE, "".join(
        f"{kind} required pam_permit.so\n" for kind in ("auth", "account", "session", "password")
    ))
    return pam_confdir


@pytest.fixture
def matrix(pam_confdir):
    """pam_matrix: user 'bob', password 's3cret', allowed for SERVICE only."""
    passdb = pam_confdir.write("passdb", f"bob:s3cret:{SERVICE}\n")
    pam_confdir.write(SERVICE, (
        f"auth required {MATRIX} passdb={passdb} verbose\n"
        f"account required {MATRIX} passdb={passdb}\n"
    ))
    return pam_confdir


def test_build_is_warning_free(tmp_path):
    out = tmp_path / "pamhost"
    done = subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(out),
         os.path.join(os.path.dirname(__file__), "host", "pamhost.c"), "-lpam", "-lpthread"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_permit_all_stages(permit):
    stages = ("auth", "setcred", "acct", "open", "close", "chauthtok")
    report = run_pam(permit, SERVICE, stages=stages)
    assert report["start"] == PAM_SUCCESS
    assert [s["stage"] for s in report["stages"]] == list(stages)
    assert all(s["rc"] == PAM_SUCCESS and s["name"] == "PAM_SUCCESS" for s in report["stages"])
    assert report["end"] == PAM_SUCCESS
    assert report["items"]["user"] == "someone"
    assert report["items"]["service"] == SERVICE
    assert report["failures"] == 0
    assert report["stdout"] == "" and report["stderr"] == ""
    assert report["maxrss_kb"] > 0 and report["elapsed_ms"] >= 0


def test_deny_is_auth_err(pam_confdir):
    pam_confdir.write(SERVICE, "auth required pam_deny.so\n")
    report = run_pam(pam_confdir, SERVICE)
    assert result_code(report, "auth") == PAM_AUTH_ERR
    assert result_name(report, "auth") == "PAM_AUTH_ERR"
    assert report["failures"] == 1  # default --expect is PAM_SUCCESS


def test_missing_service_aborts_without_fallback(pam_confdir):
    # /etc/pam.d/other exists on Debian; it must not be used.
    report = run_pam(pam_confdir, "no-such-service")
    assert report["start"] == PAM_ABORT
    assert report["stages"] == [] and report["items"] is None
    assert result_name(report, "auth") is None


def test_matrix_right_password(matrix):
    report = run_pam(matrix, SERVICE, user="bob", stages=("auth", "acct"), answers=["s3cret"])
    assert [s["rc"] for s in report["stages"]] == [PAM_SUCCESS, PAM_SUCCESS]
    assert report["messages"][0]["style"] == PAM_PROMPT_ECHO_OFF
    assert prompts(report) == ["Password: "]
    assert report["answers_used"] == 1
    # Applications cannot read PAM_AUTHTOK: the host reports what libpam says.
    assert report["items"]["authtok"] is None
    assert report["item_rc"]["authtok"] == 29  # PAM_BAD_ITEM


def test_matrix_wrong_password(matrix):
    report = run_pam(matrix, SERVICE, user="bob", answers=["nope"])
    assert result_code(report, "auth") == PAM_AUTH_ERR


def test_info_messages_are_recorded_and_not_answered(pam_confdir):
    pam_confdir.write(SERVICE, (
        "auth optional pam_echo.so hello %u on %s\n"
        "auth required pam_permit.so\n"
    ))
    report = run_pam(pam_confdir, SERVICE, user="bob", answers=["unused"])
    assert report["messages"] == [{"style": PAM_TEXT_INFO, "text": f"hello bob on {SERVICE}"}]
    assert report["answers_used"] == 0
    assert result_code(report, "auth") == PAM_SUCCESS


def test_matrix_echo_prompt(pam_confdir):
    passdb = pam_confdir.write("passdb", f"bob:s3cret:{SERVICE}\n")
    pam_confdir.write(SERVICE, f"auth required {MATRIX} passdb={passdb} echo\n")
    report = run_pam(pam_confdir, SERVICE, user="bob", answers=["s3cret"])
    assert report["messages"][0]["style"] == PAM_PROMPT_ECHO_ON
    assert result_code(report, "auth") == PAM_SUCCESS


@pytest.mark.parametrize("answer", [
    "\"quoted\\\"", "tab\tbell\a", "é ü 中", b"\xff\xfe raw", "x" * 500,
])
def test_odd_answers_reach_the_module_unchanged(pam_confdir, answer):
    raw = answer if isinstance(answer, bytes) else answer.encode()
    passdb = os.path.join(pam_confdir.path, "passdb")
    with open(passdb, "wb") as f:  # the exact bytes pam_matrix must compare
        f.write(b"bob:" + raw + f":{SERVICE}\n".encode())
    pam_confdir.write(SERVICE, f"auth required {MATRIX} passdb={passdb}\n")
    report = run_pam(pam_confdir, SERVICE, user="bob", answers=[answer])
    assert result_code(report, "auth") == PAM_SUCCESS


def test_answers_with_newlines_and_size_are_transported(matrix):
    # Each answer is one record, whatever it contains: 3 answers, 3 prompts.
    report = run_pam(matrix, SERVICE, user="bob", stages=("auth",) * 3,
                     answers=["a\nb", "x" * 100_000, "s3cret"])
    assert [s["rc"] for s in report["stages"]] == [PAM_AUTH_ERR, PAM_AUTH_ERR, PAM_SUCCESS]
    assert report["answers_used"] == 3


def test_running_out_of_answers_is_conv_err(matrix):
    # pam_matrix maps any conversation failure to its own code; the host's
    # side is visible as a prompt shown and no answer consumed.
    report = run_pam(matrix, SERVICE, user="bob", answers=[])
    assert result_code(report, "auth") != PAM_SUCCESS
    assert report["answers_used"] == 0 and report["conv_calls"] == 1


def test_conv_error_mode(matrix):
    report = run_pam(matrix, SERVICE, user="bob", answers=["s3cret"], extra_args=["--conv-error"])
    assert result_code(report, "auth") != PAM_SUCCESS
    assert report["answers_used"] == 0


def test_no_conv_function_with_pam_unix(pam_confdir):
    # pam_unix asks through pam_get_authtok, which refuses a NULL conv function.
    # (pam_matrix would call it blindly and crash: that is pam_matrix's bug.)
    pam_confdir.write(SERVICE, "auth required pam_unix.so\n")
    report = run_pam(pam_confdir, SERVICE, user="nobody", extra_args=["--no-conv"])
    # pam_get_authtok fails without a conversation; pam_unix reports that as AUTHTOK_ERR.
    assert result_code(report, "auth") == PAM_AUTHTOK_ERR
    assert report["conv_calls"] == 0


def test_items_are_set_and_reported(permit):
    items = {"tty": "/dev/pts/7", "rhost": "host\"with\\odd\x01chars", "ruser": "rémi"}
    report = run_pam(permit, SERVICE, items=items)
    assert report["set_items"] == {"tty": 0, "rhost": 0, "ruser": 0}
    for name, value in items.items():
        assert report["items"][name] == value


def test_pam_env_is_reported(pam_confdir):
    conf = pam_confdir.write("env.conf", 'PYPAM_TEST DEFAULT="v a é"\n')
    pam_confdir.write(SERVICE, (
        f"auth required pam_env.so conffile={conf} readenv=0\n"
        "auth required pam_permit.so\n"
    ))
    report = run_pam(pam_confdir, SERVICE, stages=("auth", "setcred"), extra_args=["--get-env"])
    assert report["env"]["PYPAM_TEST"] == "v a é"


def test_environment_is_clean_by_default(permit, tmp_path, monkeypatch):
    monkeypatch.setenv("PYPAM_LEAK_CHECK", "1")
    dump = tmp_path / "env"
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f'#!/bin/sh\n/usr/bin/env > {dump}\nexec "$@"\n')
    wrapper.chmod(0o755)
    run_pam(permit, SERVICE, prefix=[str(wrapper)], env={"EXTRA": "yes"})
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines())
    assert "PYPAM_LEAK_CHECK" not in seen
    assert seen["EXTRA"] == "yes" and seen["PATH"]


def test_repeat_reports_memory_and_no_failures(permit):
    report = run_pam(permit, SERVICE, extra_args=["--repeat", "3000", "--sample-every", "1000"])
    assert report["transactions"] == 3000 and report["failures"] == 0
    assert len(report["rss_kb_after"]) == 3
    assert report["rss_kb_after"][-1] - report["rss_kb_after"][0] < 512
    assert report["fds_after"] == report["fds_before"]
    assert report["per_txn_ms"] > 0


def test_repeat_counts_unexpected_results(pam_confdir):
    pam_confdir.write(SERVICE, "auth required pam_deny.so\n")
    deny = run_pam(pam_confdir, SERVICE, extra_args=["--repeat", "10"])
    assert deny["failures"] == 10
    expected = run_pam(pam_confdir, SERVICE, extra_args=["--repeat", "10", "--expect", str(PAM_AUTH_ERR)])
    assert expected["failures"] == 0


def test_threads(permit):
    report = run_pam(permit, SERVICE, stages=("auth", "acct", "open", "close"),
                     extra_args=["--repeat", "500", "--threads", "4"])
    assert report["threads"] == 4 and report["transactions"] == 2000
    assert report["failures"] == 0


def test_fork_between(matrix):
    report = run_pam(matrix, SERVICE, user="bob", stages=("auth", "acct"), answers=["s3cret"],
                     extra_args=["--fork-between"])
    child = report["child"]
    assert report["child_timeout"] is False and child["exit_status"] == 0
    assert child["pid"] != report["pid"] and child["result"]["pid"] == child["pid"]
    assert child["result"]["rc"] == PAM_SUCCESS
    assert prompts(child["result"]) == ["Password: "]  # the child was asked again
    assert [s["rc"] for s in report["stages"]] == [PAM_SUCCESS, PAM_SUCCESS]
    assert report["failures"] == 0


def test_fork_child_timeout_is_reported(pam_confdir, tmp_path):
    # pam_exec runs a command that outlives the deadline in the child only:
    # the parent's auth already happened before the fork.
    flag = tmp_path / "parent-done"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\nif [ -e {flag} ]; then sleep 30; fi\ntouch {flag}\n")
    script.chmod(0o755)
    pam_confdir.write(SERVICE, f"auth required pam_exec.so {script}\n")
    report = run_pam(pam_confdir, SERVICE, extra_args=["--fork-between", "--child-timeout", "2"],
                     timeout=30)
    assert report["child_timeout"] is True
    assert report["child"]["signal"] == 9 and report["child"]["result"] is None
    assert report["failures"] == 1


def test_user_prompt_without_user(pam_confdir):
    # pam_unix asks for the user with pam_get_user, which uses PAM_USER_PROMPT.
    pam_confdir.write(SERVICE, "auth required pam_unix.so\n")
    report = run_pam(pam_confdir, SERVICE, user=None, answers=["nobody", "x"],
                     items={"user_prompt": "Who are you? "})
    assert prompts(report)[0] == "Who are you? "
    assert report["items"]["user"] == "nobody"
    assert result_code(report, "auth") != PAM_SUCCESS


@pytest.mark.parametrize("args", [
    ["--bogus"], ["--repeat", "0"], ["--repeat", "x"], ["--stages", "auth,nope"],
    ["--item", "authtok=x"], ["--threads", "100000"], ["--fork-between", "--repeat", "2"],
])
def test_bad_command_lines_fail_cleanly(permit, args):
    with pytest.raises(PamHostError, match="exit status 2"):
        run_pam(permit, SERVICE, extra_args=args)


def test_answers_never_on_argv(permit, tmp_path):
    # The plugin must hand answers over a pipe; check the argv it builds.
    probe = tmp_path / "argv"
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {probe}\nexec "$@"\n')
    wrapper.chmod(0o755)
    run_pam(permit, SERVICE, answers=["hunter2-secret"], prefix=[str(wrapper)])
    assert "hunter2-secret" not in probe.read_text()


def test_conv_err_constant_matches_header():
    with open("/usr/include/security/_pam_types.h") as f:
        assert "#define PAM_CONV_ERR 19" in f.read()
    assert PAM_CONV_ERR == 19


def test_build_host_is_idempotent():
    first = build_host()
    mtime = os.stat(first).st_mtime
    assert build_host() == first and os.stat(first).st_mtime == mtime
