"""One LOG_AUTHPRIV line for every command that adds, changes or removes a PIN.

    pinutil[PID]: setup by alice (uid 1000) for alice (uid 1000): success
    pinutil[PID]: setup by alice (uid 1000) for alice (uid 1000): wrong_password

Who is the real uid (never the environment); the result is the JSON result token
(docs/pinutil.md). Logged whatever the outcome, refusals included; never a secret.
"""
from __future__ import annotations

import syslog

#: Commands that are logged.
AUDITED = frozenset({"setup", "change", "delete", "adopt",
                     "check"})  # pinutild's PIN checks, all but successes (service/verbs.py)


def _who(user, fallback: str) -> str:
    if user is None:
        return fallback
    return f"{user.name} (uid {user.uid})"


def log(command: str, caller, target, target_spec: str | None, result: str,
        caller_uid: int) -> None:
    """Log one audited command (`caller`/`target` are users.User or None when they
    could not be resolved)."""
    if command not in AUDITED:
        return
    whom = _who(target, repr((target_spec or "")[:64]) if target_spec else "themselves")
    line = f"{command} by {_who(caller, f'uid {caller_uid}')} for {whom}: {result}"
    syslog.openlog("pinutil", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    try:
        syslog.syslog(syslog.LOG_NOTICE if result == "success" else syslog.LOG_WARNING, line)
    finally:
        syslog.closelog()
