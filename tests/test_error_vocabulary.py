"""The one error vocabulary (pinutil/errors.py): every domain error declares its JSON
token, exit code, PAM result, message and syslog priority, and every layer derives
from that declaration.

- the table itself: no token twice, every error class in it (or travelling as an
  ancestor that is), the PAM and syslog numbers equal libpam's and <syslog.h>'s;
- the round trip in-process: pinutil's JSON for each error (the real
  `pinutil.cli.app.error_fields`), read back by the helper backend's real parser
  (`pin.local_login.helper_reply` + `pin_status_from` / `raise_for_check`), is the same
  error with the same PAM result, exit code, message and attempts left; so is the
  TPM worker's pipe (`deadline.run_in_child`);
- the round trip for real: modules/tpm_pin.py under build/pamhost (real libpam), with
  the helper backend running a pinutil whose `status` fails with each error through
  the real `pinutil.cli.app.main`: libpam's result is the error's PAM result, its
  syslog line names its token and no Python class, the user sees its message.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import syslog
import tempfile

import pytest

import pinutil.cli.app as cli_app
import pinutil.owner_auth
import pinutil.pin.enrolment
import pinutil.tpm.context
from pinutil import errors
from pinutil.deadline import TpmBudget, run_in_child
from pinutil.pin import local_login
from tests.support.pamhost import PAM_ERROR_MSG, PAM_NAMES, result_name
from tests.support.pin_env import write_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Errors defined outside errors.py, travelling as the ancestor that declares a token.
OUTSIDE = {pinutil.tpm.context.TpmCommandError: errors.TpmUnavailable,
           pinutil.tpm.context.OwnerAuthRefused: errors.TpmUnavailable,
           pinutil.owner_auth.OwnerAuthWithheld: errors.TpmUnavailable,
           pinutil.pin.enrolment.RecordError: errors.PinutilError}


def all_error_classes(base=errors.PinutilError) -> list[type]:
    found = [base]
    for sub in base.__subclasses__():
        found += all_error_classes(sub)
    return found


def example(cls: type) -> errors.PinutilError:
    if cls is errors.WrongPin:
        return errors.WrongPin(2)
    if cls is pinutil.tpm.context.TpmCommandError:
        return cls("NV_Read", 0x101)
    return cls(f"example of {cls.__name__} for alice")


def declaring(cls: type) -> type:
    """The class whose token `cls` travels as."""
    return next(c for c in cls.__mro__ if "token" in c.__dict__)


# ---- the table ---------------------------------------------------------------------------
def test_no_token_is_declared_twice():
    tokens = [cls.token for cls in errors.VOCABULARY]
    assert len(tokens) == len(set(tokens))
    assert len(errors.VOCABULARY) == len(set(errors.VOCABULARY))
    assert "success" not in tokens  # the one result no error may claim


def test_every_error_class_is_in_the_table_or_travels_as_one_that_is():
    for cls in all_error_classes():
        if "token" in cls.__dict__:
            assert cls in errors.VOCABULARY, cls
        else:
            assert OUTSIDE.get(cls) is declaring(cls), cls


def test_the_table_lists_subclasses_before_their_bases():
    for i, cls in enumerate(errors.VOCABULARY):
        for later in errors.VOCABULARY[i + 1:]:
            assert not issubclass(later, cls) or later is cls, (later, cls)


def test_every_error_declares_all_five_and_the_numbers_are_libpams():
    import pypam

    for name in ("PAM_SUCCESS", "PAM_PERM_DENIED", "PAM_AUTH_ERR", "PAM_AUTHINFO_UNAVAIL",
                 "PAM_USER_UNKNOWN", "PAM_MAXTRIES", "PAM_IGNORE"):
        assert getattr(errors, name) == getattr(pypam, name), name
    for name in ("LOG_ERR", "LOG_WARNING", "LOG_NOTICE", "LOG_INFO"):
        assert getattr(errors, name) == getattr(syslog, name), name
    for cls in errors.VOCABULARY:
        e = example(cls)
        assert isinstance(e.token, str) and re.fullmatch(r"[a-z_]+", e.token)
        assert e.exit_code in set(cli_app.ExitCode) - {0, 2}
        assert e.pam_result in PAM_NAMES and e.pam_result != errors.PAM_SUCCESS
        assert e.priority in (syslog.LOG_ERR, syslog.LOG_WARNING, syslog.LOG_NOTICE,
                              syslog.LOG_INFO)
        shown = e.user_message("alice")
        assert shown is None or (shown and "\n" not in shown)


def test_exit_codes_with_a_pam_meaning_are_that_pam_code():
    """`pinutil test`'s status is the PAM result of the check (docs/pinutil.md)."""
    for cls in (errors.WrongPin, errors.InvalidPin, errors.PinLocked, errors.NotEnrolled,
                errors.TpmUnavailable, errors.UnknownUser):
        assert cls.exit_code == cls.pam_result, cls


def test_errors_py_imports_nothing():
    """Cheap on the login path: no import at all (not even enum or dataclasses)."""
    with open(errors.__file__, encoding="utf-8") as f:
        imports = [line for line in f if re.match(r"\s*(import|from)\s", line)]
    assert imports == ["from __future__ import annotations\n"]


# ---- the round trip, in-process ----------------------------------------------------------
@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
@pytest.mark.parametrize("command", ["status", "test"])
def test_every_error_survives_cli_json_helper_unchanged(cls, command):
    original = example(cls)
    fields = {"command": command, "user": "alice",
              **cli_app.error_fields(original, command)}
    line = (json.dumps(fields) + "\n").encode()
    reply = local_login.helper_reply(original.exit_code, line)
    with pytest.raises(errors.PinutilError) as caught:
        if command == "status":
            local_login.pin_status_from(reply)
        else:
            local_login.raise_for_check(reply)
    back = caught.value
    assert type(back) is declaring(cls)
    assert (back.token, back.exit_code, back.pam_result, back.priority) == (
        original.token, original.exit_code, original.pam_result, original.priority)
    assert str(back) == errors.one_line(original)
    assert back.user_message("alice") == original.user_message("alice")
    if isinstance(original, errors.WrongPin):
        assert back.attempts_left == original.attempts_left == 2


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_survives_the_tpm_workers_pipe_unchanged(cls):
    original = example(cls)

    def fail():
        raise original

    with pytest.raises(errors.PinutilError) as caught:
        run_in_child(TpmBudget(10), fail)
    assert type(caught.value) is declaring(cls)
    assert str(caught.value) == errors.one_line(original)


@pytest.mark.parametrize("answer", [
    {"result": "success"}, {"result": "no_such_token", "error": "x"}, {}, {"result": 7},
    {"result": ["wrong_pin"]}, {"result": "wrong_pin", "attempts_left": "3"},
])
def test_an_unknown_or_odd_answer_is_unavailable_never_success(answer):
    with pytest.raises(errors.PinutilError) as caught:
        local_login.raise_for_check(local_login.helper_reply(1, json.dumps(answer).encode()))
    assert caught.value.pam_result in (errors.PAM_AUTHINFO_UNAVAIL, errors.PAM_AUTH_ERR)
    if answer.get("result") == "wrong_pin":
        assert caught.value.attempts_left == -1  # unknown, never a made-up number


# ---- the round trip, for real: libpam, tpm_pin, the helper backend ---------------------
_FAILING_PINUTIL = """\
import sys
sys.path.insert(0, {root!r})
from pinutil import errors
from pinutil.cli import app
import pinutil.tpm.context, pinutil.pin.enrolment

cls = {{c.__name__: c for c in {classes}}}[sys.argv[1]]
error = (errors.WrongPin(2) if cls is errors.WrongPin
         else cls("NV_Read", 0x101) if cls is pinutil.tpm.context.TpmCommandError
         else cls("example for the round trip"))

def fail(ctx):
    raise error

app._PIN_COMMANDS["status"] = (fail, "status")
sys.exit(app.main(sys.argv[2:], policy_path={policy!r}))
"""
_CLASSES = ("[*errors.VOCABULARY, pinutil.tpm.context.TpmCommandError, "
            "pinutil.pin.enrolment.RecordError]")
#: A Python class name in a log line: ours (PinNotOffered lived in modules/tpm_pin.py
#: once), or any *Error/*Exception; "Error:" as a traceback's last line has it.
CLASS_NAMES = re.compile(r"\b(" + "|".join(sorted(
    {c.__name__ for c in all_error_classes()} | {"PinNotOffered", "PinSkipped"}))
    + r"|[A-Z][A-Za-z]*(Error|Exception))\b|Error:")


@pytest.fixture
def failing_pinutil(pin_env):
    """pinutil_path for the helper backend: the real CLI, whose `status` raises the
    error named by the first argument (a wrapper script per class)."""
    tmp = tempfile.mkdtemp(prefix="pypam-vocab-", dir="/tmp")
    os.chmod(tmp, 0o755)
    script = os.path.join(tmp, "failing_pinutil.py")
    write_file(script, _FAILING_PINUTIL.format(root=ROOT, classes=_CLASSES,
                                               policy=pin_env.policy))

    def for_class(cls: type) -> str:
        path = os.path.join(tmp, cls.__name__)
        write_file(path, f"#!/bin/sh\nexec {sys.executable} -I {script} {cls.__name__} "
                         '"$@"\n', mode=0o755)
        return path

    try:
        yield for_class
    finally:
        shutil.rmtree(tmp)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_reaches_libpam_as_its_declared_result(pin_env, failing_pinutil,
                                                           syslog_capture, cls):
    original = example(cls)
    policy = pin_env.write_policy(os.path.join(pin_env.dir, "policy"),
                                  pinutil_path=failing_pinutil(cls))
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="helper", policy=policy))
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[])
    assert report["exit_status"] == 0 and report["stderr"] == ""
    assert result_name(report, "auth") == PAM_NAMES[original.pam_result]
    lines = [line for line in syslog_capture.lines() if "[tpm_pin]" in line.message]
    assert len(lines) == 1, syslog_capture.messages()
    assert lines[0].severity == original.priority
    assert lines[0].message.endswith(f"[{original.token}]")
    assert not CLASS_NAMES.search(lines[0].message), lines[0].message
    shown = [m["text"] for m in report["messages"] if m["style"] == PAM_ERROR_MSG]
    expected = original.user_message("root")
    assert shown == ([expected] if expected else [])
