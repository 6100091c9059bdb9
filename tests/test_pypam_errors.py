"""Error mapping: what a module raises or returns, and which modules are refused.

Every failure must be a non-success code (PAM_SERVICE_ERR unless the module chose
one), leave a reason in syslog, write nothing on the host's stdout/stderr, and, for a
module that is refused, run none of its code.
"""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile

import pytest

from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_AUTHINFO_UNAVAIL,
    PAM_CONV_ERR,
    PAM_IGNORE,
    PAM_INCOMPLETE,
    PAM_SERVICE_ERR,
    PAM_SUCCESS,
    PAM_SYMBOL_ERR,
    PAM_TRY_AGAIN,
    run_pam,
)
from tests.support.pypam_stacks import (
    MODULE_DIR,
    assert_trusted_modules,
    pypam_line,
    pypam_service,
    stage_rcs,
)

SERVICE = "pypam-errors"
NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture(autouse=True)
def trusted_modules():
    assert_trusted_modules()


def run_logged(capture, confdir, module: str | None, *args: str, stages=("auth",),
               moduledir: str | None = MODULE_DIR, **kw):
    """Run `module` in every stack; return (report, syslog text)."""
    confdir.write(SERVICE, pypam_service(module, *args, moduledir=moduledir))
    report = capture.run_pam(confdir, SERVICE, stages=stages, timeout=20, **kw)
    return report, capture.text()


def assert_quiet(report):
    assert report["stdout"] == "" and report["stderr"] == ""


# -- results a module chooses -----------------------------------------------------------
def ignore_visible(module: str, *args: str, kinds=("auth", "account", "session",
                   "password")) -> str:
    """A stack where the application can tell PAM_IGNORE apart: libpam never returns
    IGNORE itself, so an ignored module hands over to pam_debug returning TRY_AGAIN."""
    debug = " ".join(f"{hook}=try_again" for hook in (
        "auth", "cred", "acct", "open_session", "close_session", "prechauthtok", "chauthtok"))
    return "".join(
        pypam_line(kind, module, *args, control="[success=done ignore=ignore default=die]")
        + f"{kind} required pam_debug.so {debug}\n" for kind in kinds)


@pytest.mark.parametrize("code", [PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL, PAM_CONV_ERR,
                                  PAM_INCOMPLETE, PAM_SYMBOL_ERR])
def test_raised_pamerror_becomes_its_code(pam_confdir, code):
    pam_confdir.write(SERVICE, pypam_service("raise_pamerror", str(code)))
    report = run_pam(pam_confdir, SERVICE)
    assert stage_rcs(report) == [code]
    assert_quiet(report)


def test_raised_pamerror_ignore_is_ignored(pam_confdir):
    pam_confdir.write(SERVICE, ignore_visible("raise_pamerror", str(PAM_IGNORE)))
    assert stage_rcs(run_pam(pam_confdir, SERVICE)) == [PAM_TRY_AGAIN]
    # The control: the same stack with a module that does not ignore.
    pam_confdir.write(SERVICE, ignore_visible("raise_pamerror", str(PAM_AUTH_ERR)))
    assert stage_rcs(run_pam(pam_confdir, SERVICE)) == [PAM_AUTH_ERR]


def test_pamerror_cannot_carry_success(syslog_capture, pam_confdir):
    # PamError(0) is itself an error (ValueError): never success through an exception.
    report, log = run_logged(syslog_capture, pam_confdir, "raise_pamerror", "0")
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "ValueError" in log


# -- Python failures -----------------------------------------------------------------
@pytest.mark.parametrize("module, exception", [
    ("raise_systemexit", "SystemExit"),
    ("raise_keyboardinterrupt", "KeyboardInterrupt"),
    ("raise_recursionerror", "RecursionError"),
    ("raise_memoryerror", "MemoryError"),
    ("raise_at_import", "RuntimeError"),
])
def test_exceptions_are_service_err_with_traceback_in_syslog(syslog_capture, pam_confdir,
                                                             module, exception):
    report, log = run_logged(syslog_capture, pam_confdir, module)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert report["exit_status"] == 0  # the host survived (SystemExit did not exit it)
    assert f"authenticate failed: {exception}" in log
    assert "Traceback (most recent call last):" in log
    assert f"pypam_modules/{module}.py" in log
    assert_quiet(report)


def test_syntax_error_is_service_err_with_traceback(syslog_capture, pam_confdir,
                                                    trusted_tmp):
    # Generated, not kept in tests/pypam_modules (it would break `make lint`).
    trusted_tmp.module("syntax_error", "def authenticate(pamh, flags, args)\n    return 0\n")
    report, log = run_logged(syslog_capture, pam_confdir, "syntax_error",
                             moduledir=trusted_tmp.path)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "authenticate failed: SyntaxError" in log and "Traceback" in log
    assert_quiet(report)


@pytest.mark.parametrize("value, why", [
    ("none", "returned NoneType, not a PAM code"),
    ("str", "returned str, not a PAM code"),
    ("bool", "returned bool, not a PAM code"),
    ("false", "returned bool, not a PAM code"),  # False == 0 == PAM_SUCCESS
    ("float", "returned float, not a PAM code"),
    ("99", "returned 99, outside PAM's codes"),
    ("-1", "returned -1, outside PAM's codes"),
    ("32", "returned 32, outside PAM's codes"),
    ("huge", f"returned {1 << 70}, outside PAM's codes"),
])
def test_bad_returns_are_service_err(syslog_capture, pam_confdir, value, why):
    report, log = run_logged(syslog_capture, pam_confdir, "bad_return", value)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert f"authenticate {why}" in log
    assert_quiet(report)


# -- missing hooks ---------------------------------------------------------------------
def test_missing_setcred_is_ignore_and_other_hooks_symbol_err(pam_confdir):
    pam_confdir.write(SERVICE, ignore_visible("auth_only"))
    stages = ("auth", "setcred", "acct", "open", "close", "chauthtok")
    report = run_pam(pam_confdir, SERVICE, stages=stages)
    # TRY_AGAIN is pam_debug's answer after an ignored module (see ignore_visible).
    assert stage_rcs(report) == [PAM_SUCCESS, PAM_TRY_AGAIN] + [PAM_SYMBOL_ERR] * 4


def test_missing_setcred_lets_an_auth_only_module_work_in_a_plain_stack(pam_confdir):
    pam_confdir.write(SERVICE, pypam_line("auth", "auth_only", control="required")
                      + "auth required pam_permit.so\n")
    report = run_pam(pam_confdir, SERVICE, stages=("auth", "setcred"))
    assert stage_rcs(report) == [PAM_SUCCESS, PAM_SUCCESS]


# -- pam.d arguments -------------------------------------------------------------------
class TrustedTmp:
    """A root-owned 0755 directory under /tmp (sticky, root-owned), plus a marker dir.

    `module(name, body)` writes a module whose import creates markers/<name>: if the
    marker exists after a refused load, code of an untrusted module ran.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="pypam-mods-", dir="/tmp")
        os.chmod(self.path, 0o755)
        self.markers = tempfile.mkdtemp(prefix="pypam-markers-", dir="/tmp")

    def marker(self, name: str) -> str:
        return os.path.join(self.markers, name)

    def source(self, name: str) -> str:
        return (f"open({self.marker(name)!r}, 'w').close()\n"
                "def authenticate(pamh, flags, args):\n    return 0\n")

    def module(self, name: str, body: str | None = None, directory: str | None = None,
               mode: int = 0o644, uid: int = 0) -> str:
        path = os.path.join(directory or self.path, name + ".py")
        with open(path, "w") as f:
            f.write(self.source(name) if body is None else body)
        os.chown(path, uid, 0)
        os.chmod(path, mode)
        return path

    def subdir(self, name: str, mode: int = 0o755, uid: int = 0) -> str:
        path = os.path.join(self.path, name)
        os.mkdir(path)
        os.chown(path, uid, 0)
        os.chmod(path, mode)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        shutil.rmtree(self.markers, ignore_errors=True)


@pytest.fixture
def trusted_tmp():
    tmp = TrustedTmp()
    try:
        yield tmp
    finally:
        tmp.remove()


def test_marker_module_runs_when_trusted(pam_confdir, trusted_tmp):
    # The control for every refusal below: a trusted copy does run and create its marker.
    trusted_tmp.module("evil")
    pam_confdir.write(SERVICE, pypam_service("evil", moduledir=trusted_tmp.path))
    report = run_pam(pam_confdir, SERVICE)
    assert stage_rcs(report) == [PAM_SUCCESS]
    assert os.path.exists(trusted_tmp.marker("evil"))


def test_missing_module(syslog_capture, pam_confdir):
    report, log = run_logged(syslog_capture, pam_confdir, "no_such_module")
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "no_such_module.py: No such file or directory" in log


@pytest.mark.parametrize("module", ["../evil", "/MARKERDIR/evil", "evil.py", "",
                                    "evil/../evil", "-evil", "é", "x" * 65])
def test_module_names_that_are_not_identifiers(syslog_capture, pam_confdir, trusted_tmp,
                                               module):
    # evil.py sits in the parent of the module directory, so a name that escaped
    # the directory would find (and run) it.
    inner = trusted_tmp.subdir("inner")
    trusted_tmp.module("evil")
    module = module.replace("/MARKERDIR", trusted_tmp.path)
    report, log = run_logged(syslog_capture, pam_confdir, module, moduledir=inner)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "invalid module name" in log
    assert not os.path.exists(trusted_tmp.marker("evil"))


def test_module_name_as_an_absolute_file(syslog_capture, pam_confdir, trusted_tmp):
    path = trusted_tmp.module("evil")
    report, log = run_logged(syslog_capture, pam_confdir, path, moduledir=None)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "invalid module name" in log
    assert not os.path.exists(trusted_tmp.marker("evil"))


def test_missing_module_argument(syslog_capture, pam_confdir):
    report, log = run_logged(syslog_capture, pam_confdir, None, "trivial")
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "module= is required" in log


def test_duplicate_module_argument(syslog_capture, pam_confdir, trusted_tmp):
    trusted_tmp.module("evil")
    report, log = run_logged(syslog_capture, pam_confdir, "trivial", "module=evil",
                             moduledir=trusted_tmp.path)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "module= given twice" in log
    assert not os.path.exists(trusted_tmp.marker("evil"))


@pytest.mark.parametrize("moduledir", ["tests/pypam_modules", "./pypam_modules", "..",
                                       "MODDIR/../pypam_modules", "MODDIR/."])
def test_moduledir_must_be_absolute_and_normalised(syslog_capture, pam_confdir,
                                                   moduledir):
    moduledir = moduledir.replace("MODDIR", MODULE_DIR)
    report, log = run_logged(syslog_capture, pam_confdir, "trivial", moduledir=moduledir)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "moduledir= must be an absolute, normalised path" in log


def test_duplicate_moduledir_argument(syslog_capture, pam_confdir, trusted_tmp):
    trusted_tmp.module("evil")
    report, log = run_logged(syslog_capture, pam_confdir, "evil",
                             f"moduledir={trusted_tmp.path}")
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert "moduledir= given twice" in log
    assert not os.path.exists(trusted_tmp.marker("evil"))


# -- untrusted module files and directories ----------------------------------------------
def _untrusted_file(tmp: TrustedTmp, case: str) -> tuple[str, str]:
    """Set up `evil` as an untrusted module in tmp.path; return (moduledir, reason)."""
    if case == "owned by nobody":
        tmp.module("evil", uid=NOBODY)
        return tmp.path, f"is owned by uid {NOBODY}, not root"
    if case == "group-writable":
        tmp.module("evil", mode=0o664)
        return tmp.path, "is group- or world-writable"
    if case == "world-writable":
        tmp.module("evil", mode=0o646)
        return tmp.path, "is group- or world-writable"
    if case == "symlink":
        # The target is trusted, but the name is a link (it could be re-pointed).
        target = tmp.subdir("real")
        tmp.module("evil", directory=target)
        os.symlink(os.path.join(target, "evil.py"), os.path.join(tmp.path, "evil.py"))
        return tmp.path, "Too many levels of symbolic links"
    if case == "fifo":
        os.mkfifo(os.path.join(tmp.path, "evil.py"), 0o644)
        return tmp.path, "is not a regular file"
    if case == "directory":
        tmp.subdir("evil.py")
        return tmp.path, "is not a regular file"
    if case == "directory owned by nobody":
        sub = tmp.subdir("sub", uid=NOBODY)
        tmp.module("evil", directory=sub)
        return sub, f"is owned by uid {NOBODY}, not root"
    if case == "world-writable directory":
        sub = tmp.subdir("sub", mode=0o777)
        tmp.module("evil", directory=sub)
        return sub, "is group- or world-writable"
    if case == "world-writable sticky directory":
        sub = tmp.subdir("sub", mode=0o1777)
        tmp.module("evil", directory=sub)
        return sub, "is group- or world-writable"
    if case == "world-writable ancestor":
        mid = tmp.subdir("mid", mode=0o777)
        sub = os.path.join(mid, "sub")
        os.mkdir(sub, 0o755)
        tmp.module("evil", directory=sub)
        return sub, f"untrusted directory {mid}"
    if case == "ancestor owned by nobody":
        mid = tmp.subdir("mid", uid=NOBODY)
        sub = os.path.join(mid, "sub")
        os.mkdir(sub, 0o755)
        tmp.module("evil", directory=sub)
        return sub, f"untrusted directory {mid}"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "owned by nobody", "group-writable", "world-writable", "symlink", "fifo", "directory",
    "directory owned by nobody", "world-writable directory",
    "world-writable sticky directory", "world-writable ancestor",
    "ancestor owned by nobody",
])
def test_untrusted_module_is_refused_without_running(syslog_capture, pam_confdir,
                                                     trusted_tmp, case):
    moduledir, reason = _untrusted_file(trusted_tmp, case)
    report, log = run_logged(syslog_capture, pam_confdir, "evil", moduledir=moduledir)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert reason in log
    assert not os.path.exists(trusted_tmp.marker("evil"))
    assert_quiet(report)


def test_module_file_owned_by_the_effective_uid_is_accepted(pam_confdir, trusted_tmp):
    # The rule is "root or the euid"; as root both are 0, so the control for
    # "owned by nobody" is a root-owned file with the same mode: it runs.
    trusted_tmp.module("evil", mode=0o600)
    pam_confdir.write(SERVICE, pypam_service("evil", moduledir=trusted_tmp.path))
    assert stage_rcs(run_pam(pam_confdir, SERVICE)) == [PAM_SUCCESS]
    assert os.path.exists(trusted_tmp.marker("evil"))
