"""Every feature of the pypam handle, through real libpam (pam_start_confdir host).

The modules live in tests/pypam_modules/ and report what they saw as `report:` info
messages, through items the host reads back, or through the PAM environment.
"""
from __future__ import annotations

import os
import syslog

import pytest

from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_AUTHTOK_ERR,
    PAM_CONV_ERR,
    PAM_ERROR_MSG,
    PAM_PROMPT_ECHO_OFF,
    PAM_PROMPT_ECHO_ON,
    PAM_SESSION_ERR,
    PAM_SUCCESS,
    PAM_TEXT_INFO,
    prompts,
    run_pam,
)
from tests.support.pypam_stacks import (
    assert_trusted_modules,
    pypam_line,
    pypam_service,
    reports,
    stage_rcs,
)
from tests.support.syslog_capture import AUTHPRIV

SERVICE = "pypam-handle"
CONV_FAULTS = ["--no-conv", "--conv-error", "--conv-null-resp", "--conv-null-answers"]


@pytest.fixture(autouse=True)
def trusted_modules():
    assert_trusted_modules()


@pytest.fixture
def service(pam_confdir):
    """service(module, *args) writes SERVICE running that module in every stack."""
    def write(module: str, *args: str) -> str:
        pam_confdir.write(SERVICE, pypam_service(module, *args))
        return pam_confdir.path
    return write


# -- items --------------------------------------------------------------------------
def test_items_round_trip_and_reach_the_application(service):
    confdir = service("items_roundtrip")
    report = run_pam(confdir, SERVICE, user="alice",
                     items={"tty": "pts/7", "rhost": "host.example", "ruser": "carol",
                            "user_prompt": "Name: ", "xdisplay": ":3"})
    assert stage_rcs(report) == [PAM_SUCCESS]
    [seen] = reports(report)
    # What the application set is what the module reads.
    assert seen["before"] == {
        "user": "alice", "tty": "pts/7", "rhost": "host.example", "ruser": "carol",
        "user_prompt": "Name: ", "xdisplay": ":3", "service": SERVICE,
        "authtok": None, "oldauthtok": None, "authtok_type": None,
    }
    # Each settable item: the set value (non-ASCII and a non-UTF-8 byte) reads back
    # unchanged, then None unsets it.
    for name in ("user", "user_prompt", "tty", "rhost", "ruser", "authtok", "oldauthtok",
                 "xdisplay", "authtok_type"):
        assert seen[name] == [True, None], name
    assert seen["service"] == "other-service"  # libpam lowercases service names
    assert seen["service_none"] == 29  # PAM_BAD_ITEM: libpam would crash on NULL
    assert seen["xauthdata"] == ["MIT-MAGIC-COOKIE-1", "0001ff636f6f6b6965"]
    # And what the module left is what the application reads with pam_get_item.
    items = report["items"]
    assert {k: items[k] for k in ("user", "tty", "rhost", "ruser", "user_prompt")} == {
        k: f"final-{k}" for k in ("user", "tty", "rhost", "ruser", "user_prompt")}
    assert items["service"] == SERVICE
    assert items["authtok"] is None and report["item_rc"]["authtok"] == 29  # apps can't


# -- user and authtok ---------------------------------------------------------------
def test_get_user_prompts_with_the_given_prompt(service):
    report = run_pam(service("conversation", "get_user", "Who-are-you?"), SERVICE,
                     user=None, answers=["bob"])
    assert stage_rcs(report) == [PAM_SUCCESS]
    assert report["messages"] == [{"style": PAM_PROMPT_ECHO_ON, "text": "Who-are-you?"}]
    assert report["items"]["user"] == "bob" and report["items"]["ruser"] == "got-bob"


def test_get_user_uses_the_user_prompt_item_then_libpams_default(service):
    confdir = service("conversation", "get_user")
    report = run_pam(confdir, SERVICE, user=None, answers=["bob"],
                     items={"user_prompt": "Account: "})
    assert prompts(report) == ["Account: "]
    report = run_pam(confdir, SERVICE, user=None, answers=["bob"])
    assert prompts(report) == ["login:"]
    assert report["items"]["ruser"] == "got-bob"


def test_get_user_does_not_prompt_when_the_user_is_known(service):
    report = run_pam(service("conversation", "get_user", "Who?"), SERVICE, user="dave",
                     answers=["unused"])
    assert report["messages"] == [] and report["items"]["ruser"] == "got-dave"


@pytest.mark.parametrize("fault", CONV_FAULTS)
def test_get_user_conversation_faults_are_conv_err(service, fault):
    report = run_pam(service("conversation", "get_user"), SERVICE, user=None,
                     answers=["bob"], extra_args=[fault])
    assert stage_rcs(report) == [PAM_CONV_ERR]
    assert report["items"]["user"] is None


def test_get_authtok_prompts_with_the_given_prompt_or_password(service):
    report = run_pam(service("conversation", "get_authtok", "PIN?"), SERVICE,
                     answers=["t0k"])
    assert report["messages"] == [{"style": PAM_PROMPT_ECHO_OFF, "text": "PIN?"}]
    assert report["items"]["ruser"] == "tok-t0k"
    report = run_pam(service("conversation", "get_authtok"), SERVICE, answers=["t0k"])
    assert prompts(report) == ["Password: "]


@pytest.mark.parametrize("fault", CONV_FAULTS)
def test_get_authtok_conversation_faults_never_succeed(service, fault):
    # pam_get_authtok maps every conversation failure to PAM_AUTHTOK_ERR itself.
    report = run_pam(service("conversation", "get_authtok"), SERVICE, answers=["t"],
                     extra_args=[fault])
    assert stage_rcs(report) == [PAM_AUTHTOK_ERR]
    assert report["items"]["ruser"] is None


def test_authtok_set_by_one_module_is_read_by_the_next(pam_confdir):
    pam_confdir.write(SERVICE, pypam_line("auth", "authtok_setter", "s3cr3t-\u00e9")
                      + pypam_line("auth", "authtok_reader", "s3cr3t-\u00e9"))
    report = run_pam(pam_confdir, SERVICE, answers=["never-asked"])
    assert stage_rcs(report) == [PAM_SUCCESS]
    assert report["messages"] == [] and report["answers_used"] == 0
    assert report["items"]["ruser"] == "item=s3cr3t-\u00e9 get=s3cr3t-\u00e9"


def test_authtok_reader_alone_prompts_and_fails(pam_confdir):
    # The control: without the setter the reader sees no item and has to ask.
    pam_confdir.write(SERVICE, pypam_line("auth", "authtok_reader", "s3cr3t"))
    report = run_pam(pam_confdir, SERVICE, answers=["typed"])
    assert stage_rcs(report) == [PAM_AUTH_ERR]
    assert prompts(report) == ["should not be asked: "]
    assert report["items"]["ruser"] == "item=None get=typed"


# -- conversation -------------------------------------------------------------------
def test_conversation_single_message_gives_one_response(service):
    report = run_pam(service("conversation", "single"), SERVICE, answers=["a1"])
    assert report["messages"][0] == {"style": PAM_PROMPT_ECHO_ON, "text": "single?"}
    assert reports(report) == [{"type": "Response", "resp": "a1", "retcode": 0}]


def test_conversation_list_keeps_order_and_styles(service):
    report = run_pam(service("conversation", "list"), SERVICE, answers=["a1", "a2"])
    assert report["messages"][:4] == [
        {"style": PAM_PROMPT_ECHO_OFF, "text": "first?"},
        {"style": PAM_TEXT_INFO, "text": "between"},
        {"style": PAM_PROMPT_ECHO_ON, "text": "second?"},
        {"style": PAM_ERROR_MSG, "text": "careful"},
    ]
    assert report["conv_calls"] == 2  # the list is one call, the report another
    assert reports(report) == [[["a1", 0], [None, 0], ["a2", 0], [None, 0]]]


def test_prompt_info_and_error_shortcuts(service):
    report = run_pam(service("conversation", "prompt"), SERVICE, answers=["h", "s"])
    assert [(m["style"], m["text"]) for m in report["messages"][:2]] == [
        (PAM_PROMPT_ECHO_OFF, "hidden?"), (PAM_PROMPT_ECHO_ON, "shown?")]
    assert reports(report) == [["h", "s"]]
    report = run_pam(service("conversation", "info_error"), SERVICE)
    assert report["messages"] == [{"style": PAM_TEXT_INFO, "text": "an info"},
                                  {"style": PAM_ERROR_MSG, "text": "an error"}]
    assert report["answers_used"] == 0


@pytest.mark.parametrize("fault", CONV_FAULTS)
def test_prompt_conversation_faults_are_conv_err(service, fault):
    report = run_pam(service("conversation", "prompt"), SERVICE, answers=["h", "s"],
                     extra_args=[fault])
    assert stage_rcs(report) == [PAM_CONV_ERR]
    assert reports(report) == []


def test_null_answer_is_response_none_from_conversation(service):
    confdir = service("conversation", "raw_null")
    report = run_pam(confdir, SERVICE, extra_args=["--conv-null-answers"])
    assert stage_rcs(report) == [PAM_AUTH_ERR]
    assert report["items"]["ruser"] == "resp-is-none"
    report = run_pam(confdir, SERVICE, answers=["x"])  # control: a real answer
    assert report["items"]["ruser"] == "resp-is-set"


def test_response_repr_hides_the_answer(service):
    report = run_pam(service("conversation", "response_repr"), SERVICE,
                     answers=["SECRET-ANSWER"])
    [seen] = reports(report)
    assert "SECRET-ANSWER" not in repr(seen)
    assert seen["repr"] == "Response(resp=<hidden>, retcode=0)"


# -- environment and data -----------------------------------------------------------
def test_env_is_visible_to_the_application(service):
    report = run_pam(service("env_roundtrip"), SERVICE, stages=("auth", "open"),
                     extra_args=["--get-env"])
    assert stage_rcs(report) == [PAM_SUCCESS, PAM_SUCCESS]
    assert reports(report) == [{"a": "alpha", "get_missing": None, "gone_in": False,
                                "keys": ["PYPAM_A", "PYPAM_B"], "len": 2,
                                "del_missing": "KeyError"}]
    assert report["env"] == {"PYPAM_A": "alpha", "PYPAM_B": "beta=with=equals \u00e9",
                             "PYPAM_SESSION": "alpha-session"}


def test_data_is_kept_from_authenticate_to_the_sessions(service):
    report = run_pam(service("data_kept"), SERVICE, user="erin",
                     stages=("auth", "open", "close"), extra_args=["--get-env"])
    assert stage_rcs(report) == [PAM_SUCCESS] * 3
    assert report["env"] == {"PYPAM_DATA_USER": "erin"}


def test_data_without_authenticate_is_empty(service):
    report = run_pam(service("data_kept"), SERVICE, stages=("open",))
    assert stage_rcs(report) == [PAM_SESSION_ERR]


def test_data_is_not_seen_by_a_new_handle_in_the_same_process(service):
    report = run_pam(service("data_kept"), SERVICE, stages=("auth", "open"),
                     extra_args=["--repeat", "50", "--stop-on-fail"])
    assert report["transactions"] == 50 and report["failures"] == 0


def test_a_module_global_does_leak_between_handles(service):
    # The control for the test above: the same check catches state that is shared.
    report = run_pam(service("data_in_global"), SERVICE, stages=("auth", "open"),
                     extra_args=["--repeat", "50", "--stop-on-fail"])
    assert report["failures"] == 49


# -- fail_delay, strerror -----------------------------------------------------------
def test_fail_delay_delays_failures_only(service):
    delayed = run_pam(service("fail_delay", "400000", str(PAM_AUTH_ERR)), SERVICE,
                      extra_args=["--expect", str(PAM_AUTH_ERR)])
    undelayed = run_pam(service("fail_delay", "0", str(PAM_AUTH_ERR)), SERVICE,
                        extra_args=["--expect", str(PAM_AUTH_ERR)])
    success = run_pam(service("fail_delay", "400000", "0"), SERVICE)
    assert delayed["failures"] == undelayed["failures"] == success["failures"] == 0
    # libpam randomises the delay around the request; 400 ms gives well over 150 ms.
    assert delayed["elapsed_ms"] > undelayed["elapsed_ms"] + 150
    assert success["elapsed_ms"] < delayed["elapsed_ms"] - 150


def test_strerror_is_libpams_text(service):
    report = run_pam(service("strerror", "0", "7", "19", "25", "999"), SERVICE)
    [seen] = reports(report)
    assert seen["0"] == "Success"
    assert seen["7"] == "Authentication failure"
    assert seen["19"] == "Conversation error"
    assert seen["25"] == "The return value should be ignored by PAM dispatch"
    assert seen["999"].startswith("Unknown PAM error")


# -- logging --------------------------------------------------------------------------
def _log_lines(capture, tag: str = "[logs]"):
    return [(line.facility, line.severity, line.message.split(tag + " ", 1)[1])
            for line in capture.lines() if tag in line.message]


def test_syslog_and_logger_reach_syslog_without_debug_lines(syslog_capture, pam_confdir):
    pam_confdir.write(SERVICE, pypam_service("logs"))
    report = syslog_capture.run_pam(pam_confdir, SERVICE)
    assert stage_rcs(report) == [PAM_SUCCESS]
    assert _log_lines(syslog_capture) == [
        (AUTHPRIV, syslog.LOG_NOTICE, "direct-notice-line"),
        (AUTHPRIV, syslog.LOG_DEBUG, "direct-debug-line"),  # explicit: always sent
        (AUTHPRIV, syslog.LOG_INFO, "logger-info-line two"),
        (AUTHPRIV, syslog.LOG_WARNING, "logger-warning-line"),
        (AUTHPRIV, syslog.LOG_ERR, "logger-error-line"),
        (AUTHPRIV, syslog.LOG_CRIT, "logger-critical-line with percent %s %n"),
    ]
    # Lines carry pam_syslog's "pam_pypam(service:type)" prefix.
    assert all(m.startswith(f"pam_pypam({SERVICE}:auth): [logs] ")
               for m in syslog_capture.messages() if "[logs]" in m)
    assert report["stdout"] == report["stderr"] == ""


def test_a_name_with_control_characters_stays_one_visible_line(syslog_capture, pam_confdir):
    """A PAM_USER a client chose ("x\\nPIN accepted for root", terminal escapes, C1
    controls) reaches syslog as one line, its control characters escaped: no forged
    second line for journald or a line-based log reader, nothing a terminal obeys."""
    pam_confdir.write(SERVICE, pypam_service("logs_user"))
    forged = "x\nPIN accepted for root\r\x1b[2J\x85\x7f\tend"
    syslog_capture.run_pam(pam_confdir, SERVICE, user=forged)
    messages = [m for m in syslog_capture.messages() if "[logs_user]" in m]
    one_line = (f"pam_pypam({SERVICE}:auth): [logs_user] no PIN login for "
                "x\\x0aPIN accepted for root\\x0d\\x1b[2J\\x85\\x7f\\x09end: unknown user")
    assert messages == [one_line]


def test_logger_debug_lines_only_with_debug_argument(syslog_capture, pam_confdir):
    pam_confdir.write(SERVICE, pypam_service("logs", "debug"))
    syslog_capture.run_pam(pam_confdir, SERVICE)
    lines = _log_lines(syslog_capture)
    assert (AUTHPRIV, syslog.LOG_DEBUG, "logger-debug-line 1") in lines
    assert len(lines) == 7


def test_syslog_capture_leaves_the_system_alone(syslog_capture, pam_confdir):
    # The fake /dev/log exists only inside the run's mount namespace.
    pam_confdir.write(SERVICE, pypam_service("logs"))
    syslog_capture.run_pam(pam_confdir, SERVICE)
    assert syslog_capture.lines()
    assert not os.path.exists("/dev/log")
    with open("/proc/self/mountinfo") as f:
        assert syslog_capture.root not in f.read()
