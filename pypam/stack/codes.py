"""PAM return codes and control actions by the names pam.d files use.

The tables are libpam's own (libpam/pam_tokens.h): the order matters, because libpam
matches a `[value=action]` name by prefix, first match in this order.
"""
from __future__ import annotations

from .. import constants as _c

#: pam.d value names, index = return code (pam_tokens.h `_pam_token_returns`).
RETURN_NAMES: tuple[str, ...] = (
    "success", "open_err", "symbol_err", "service_err", "system_err", "buf_err",
    "perm_denied", "auth_err", "cred_insufficient", "authinfo_unavail", "user_unknown",
    "maxtries", "new_authtok_reqd", "acct_expired", "session_err", "cred_unavail",
    "cred_expired", "cred_err", "no_module_data", "conv_err", "authtok_err",
    "authtok_recover_err", "authtok_lock_busy", "authtok_disable_aging", "try_again",
    "ignore", "abort", "authtok_expired", "module_unknown", "bad_item", "conv_again",
    "incomplete",
)
RETURN_VALUES = len(RETURN_NAMES)          # _PAM_RETURN_VALUES: codes 0..31 are valid
DEFAULT_NAME = "default"                   # index RETURN_VALUES in libpam's table

# Actions as libpam encodes them: > 0 is a jump over that many lines.
IGNORE, OK, DONE, BAD, DIE, RESET, UNDEF = 0, -1, -2, -3, -4, -5, -6
#: pam_tokens.h `_pam_token_actions`: index i is action -i.
ACTION_NAMES: tuple[str, ...] = ("ignore", "ok", "done", "bad", "die", "reset")

SUCCESS = _c.PAM_SUCCESS
PERM_DENIED = _c.PAM_PERM_DENIED
MUST_FAIL_CODE = _c.PAM_PERM_DENIED        # pam_dispatch.c PAM_MUST_FAIL_CODE
IGNORE_CODE = _c.PAM_IGNORE
ABORT = _c.PAM_ABORT
MODULE_UNKNOWN = _c.PAM_MODULE_UNKNOWN
INCOMPLETE = _c.PAM_INCOMPLETE
NEW_AUTHTOK_REQD = _c.PAM_NEW_AUTHTOK_REQD
SYSTEM_ERR = _c.PAM_SYSTEM_ERR
INVALID_RETVAL = -1                        # pam_private.h _PAM_INVALID_RETVAL


def code_name(code: int) -> str:
    """The pam.d name of a return code (`auth_err`), or the number for codes libpam
    does not know (modules may return anything; libpam treats those as failures)."""
    if 0 <= code < RETURN_VALUES:
        return RETURN_NAMES[code]
    return str(code)


def parse_code(text: str) -> int:
    """A code given by pam.d name (`auth_err`, any case, `PAM_` prefix allowed) or number."""
    word = text.strip().lower()
    word = word.removeprefix("pam_")
    if word in RETURN_NAMES:
        return RETURN_NAMES.index(word)
    if word == "authtok_recovery_err":      # the C constant's spelling
        return RETURN_NAMES.index("authtok_recover_err")
    try:
        return int(word, 0)
    except ValueError:
        raise ValueError(f"unknown PAM return code {text!r} (a name such as "
                         f"'auth_err' or a number)") from None


def action_name(action: int) -> str:
    """`ok`, `done`, ..., or `jump N` for a positive action."""
    if action > 0:
        return f"jump {action}"
    if -len(ACTION_NAMES) < action <= 0:
        return ACTION_NAMES[-action]
    return "bad"                            # UNDEF: libpam treats it as a bad jump
