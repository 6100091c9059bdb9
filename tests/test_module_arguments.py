"""The pam.d arguments of tpm_pin and master_key, through real libpam (build/pamhost),
build/pam_pypam.so and a real swtpm: both modules read them with pypam's one parser
(pypam/arguments.py), so the same line means the same thing to both.

- `policy=` must be absolute in both (tpm_pin used to resolve a relative one against
  the application's working directory);
- an unknown argument is logged once (LOG_WARNING) and ignored;
- a known one given twice or in the wrong shape fails closed: tpm_pin gives
  PAM_AUTHINFO_UNAVAIL without a prompt or a TPM attempt, master_key leaves the
  decision alone (PAM_IGNORE) and sets no token.
"""
from __future__ import annotations

import os

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, result_name

PIN = "2580"
LIMIT = 3


def master_key_line(policy: str, *args: str) -> str:
    return " ".join(["auth optional", PAM_PYPAM_SO, "module=master_key", f"policy={policy}",
                     *args])


def login(pin_env, syslog_capture, *lines: str) -> dict:
    svc = pin_env.service("args", *lines)
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[PIN])
    assert report["exit_status"] == 0 and report["stderr"] == "", report["stderr"]
    return report


def refused_without_a_prompt(pin_env, report) -> None:
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # no prompt, no message
    assert pin_env.counter("root") == (0, LIMIT)  # no TPM attempt spent


def count(syslog_capture, text: str) -> int:
    return sum(text in m for m in syslog_capture.messages())


def test_a_relative_policy_is_refused_by_both_modules(pin_env, syslog_capture):
    pin_env.enrol("root", PIN)
    # Relative to the working directory the host inherits: on the old code tpm_pin
    # read it from there and the login succeeded.
    relative = os.path.relpath(pin_env.policy)
    assert not relative.startswith("/") and os.path.exists(relative)
    report = login(pin_env, syslog_capture, pin_env.tpm_pin_line(policy=relative))
    refused_without_a_prompt(pin_env, report)
    assert count(syslog_capture, "policy= must be an absolute path") == 1
    report = login(pin_env, syslog_capture, pin_env.tpm_pin_line(),
                   master_key_line(relative))
    assert result_name(report, "auth") == "PAM_SUCCESS"  # master_key never decides
    assert count(syslog_capture, "policy= must be an absolute path") == 1
    assert count(syslog_capture, "keyring token not set") == 1


def test_unknown_arguments_are_logged_once_and_ignored(pin_env, syslog_capture):
    pin_env.enrol("root", PIN)
    unknown = ("bogus", "bogus", "nodebug=1", "Policy=/x")
    report = login(pin_env, syslog_capture, pin_env.tpm_pin_line(*unknown),
                   master_key_line(pin_env.policy, *unknown))
    assert result_name(report, "auth") == "PAM_SUCCESS"
    for arg in ("'bogus'", "'nodebug=1'", "'Policy=/x'"):
        # once per module: tpm_pin's line and master_key's line
        assert count(syslog_capture, f"ignoring unknown argument {arg}") == 2, arg
    warnings = [line for line in syslog_capture.lines() if "unknown argument" in line.message]
    assert {line.severity for line in warnings} == {4}  # LOG_WARNING


@pytest.mark.parametrize("duplicate", ["policy", "backend"])
def test_an_option_given_twice_fails_closed(pin_env, syslog_capture, duplicate):
    pin_env.enrol("root", PIN)
    other = pin_env.write_policy(os.path.join(pin_env.dir, "other-policy"))
    extra = {"policy": f"policy={other}", "backend": "backend=direct"}[duplicate]
    # The old code took the last value, whichever the admin meant.
    report = login(pin_env, syslog_capture, pin_env.tpm_pin_line(extra))
    refused_without_a_prompt(pin_env, report)
    assert count(syslog_capture, f"{duplicate}= given twice") == 1
    if duplicate == "policy":
        report = login(pin_env, syslog_capture, pin_env.tpm_pin_line(),
                       master_key_line(pin_env.policy, extra))
        assert result_name(report, "auth") == "PAM_SUCCESS"
        assert count(syslog_capture, "policy= given twice") == 1
        assert count(syslog_capture, "keyring token not set") == 1


def test_a_flag_given_twice_means_it_once(pin_env, syslog_capture):
    pin_env.enrol("root", PIN)
    report = login(pin_env, syslog_capture, pin_env.tpm_pin_line("debug", "debug"),
                   master_key_line(pin_env.policy, "debug", "debug"))
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert not any("argument" in m for m in syslog_capture.messages())


@pytest.mark.parametrize("arg, why", [
    ("debug=1", "debug takes no value"),
    ("allow_remote=yes", "allow_remote takes no value"),
    ("backend", "backend= needs a value"),
    ("backend=fast", "backend= must be one of auto, direct, helper"),
    ("policy=", "policy= must be an absolute path"),
])
def test_a_known_argument_in_the_wrong_shape_fails_closed(pin_env, syslog_capture, arg, why):
    pin_env.enrol("root", PIN)
    if arg.startswith("backend"):
        line = pin_env.tpm_pin_line(arg, backend=None)
    elif arg.startswith("policy"):
        line = pin_env.tpm_pin_line().replace(f"policy={pin_env.policy}", arg)
    else:
        line = pin_env.tpm_pin_line(arg)
    refused_without_a_prompt(pin_env, login(pin_env, syslog_capture, line))
    assert count(syslog_capture, why) == 1
