"""The entry point the shim calls for every pam_sm_* function.

`call` starts from PAM_SERVICE_ERR and only an int result in PAM's range, returned by
the module, replaces it. Every exception (SystemExit and KeyboardInterrupt included)
becomes PAM_SERVICE_ERR with the traceback in syslog; nothing reaches stdout/stderr.
"""
from __future__ import annotations

import syslog

from .arguments import ArgumentError, parse_arguments
from .constants import PAM_IGNORE, PAM_SERVICE_ERR, PAM_SYMBOL_ERR, RESULT_LIMIT
from .errors import PamError
from .handle import PamHandle
from .loader import ModuleLoadError, load_module

HOOKS = frozenset(
    {"authenticate", "setcred", "acct_mgmt", "open_session", "close_session", "chauthtok"}
)
MAX_TRACEBACK_LINES = 40


def _checked_result(value: object, pamh: PamHandle, hook: str) -> int:
    # bool is an int subclass, but `return True` is a bug, not PAM_OPEN_ERR.
    if not isinstance(value, int) or isinstance(value, bool):
        pamh.syslog(syslog.LOG_ERR, f"{hook} returned {type(value).__name__}, not a PAM code")
        return PAM_SERVICE_ERR
    code = int(value)
    if not 0 <= code < RESULT_LIMIT:
        pamh.syslog(syslog.LOG_ERR, f"{hook} returned {code}, outside PAM's codes")
        return PAM_SERVICE_ERR
    return code


def _log_exception(pamh: PamHandle, hook: str, exc: BaseException) -> None:
    try:
        import traceback

        lines = traceback.format_exception(exc)
        text = "".join(lines).rstrip().splitlines()[-MAX_TRACEBACK_LINES:]
        pamh.syslog(syslog.LOG_ERR, f"{hook} failed: {type(exc).__name__}")
        for line in text:
            pamh.syslog(syslog.LOG_ERR, line)
    except BaseException:  # noqa: BLE001, S110 - even MemoryError while logging must not escape
        pass


def call(hook: str, handle_address: int, flags: int, argv: list[str],
         default_moduledir: str) -> int:
    """Run `hook` of the module named in argv on this PAM handle; return a PAM code."""
    result = PAM_SERVICE_ERR
    pamh = PamHandle(handle_address, "pypam")
    try:
        if hook not in HOOKS:
            raise ArgumentError(f"unknown hook {hook!r}")
        parsed = parse_arguments(argv, default_moduledir)
        pamh = PamHandle(handle_address, parsed.module, parsed.args)
        module = load_module(parsed.module, parsed.moduledir)
        function = getattr(module, hook, None)
        if function is None:
            # An auth-only module must work in any stack: setcred is optional.
            return PAM_IGNORE if hook == "setcred" else PAM_SYMBOL_ERR
        result = _checked_result(function(pamh, flags, list(parsed.args)), pamh, hook)
    except PamError as e:
        result = e.code
    except (ArgumentError, ModuleLoadError) as e:
        pamh.syslog(syslog.LOG_ERR, f"{hook}: {e}")
        result = PAM_SERVICE_ERR
    except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt too
        _log_exception(pamh, hook, e)
        result = PAM_SERVICE_ERR
    return result
