"""Domain errors of the PIN and master-key core: the one error vocabulary.

Every failure the core can report is one of these classes, and each class declares,
in one place, everything the outside sees of it:

- `token`: the JSON `result` of `pinutil --json` and of the helper protocol (the
  PAM module reads pinutil's JSON back into the same class: `from_json`);
- `exit_code`: pinutil's exit status;
- `pam_result`: what tpm_pin returns to libpam;
- `priority`: the syslog priority of the PAM module's line (by-design refusals are
  LOG_INFO/LOG_NOTICE; only what an administrator must fix is LOG_ERR);
- `shown`: what the PAM module shows the user (None: nothing; the stack goes on to
  the next method), `{user}` replaced by the user's name.

A subclass that declares no token of its own (e.g. `TpmCommandError` in
pinutil/tpm/context.py) travels as its nearest ancestor that does. `VOCABULARY` lists
every declaring class; tests/test_error_vocabulary.py proves that each survives
pinutil -> JSON -> helper backend -> PAM result unchanged, and that no token is used
twice. `str(e)` is safe to show and log: it never contains a PIN, a token or a secret,
and no line built from it names a Python class.

Imported on every login: it imports nothing, not even enum or dataclasses
(docs/ARCHITECTURE.md).
"""
from __future__ import annotations

# PAM result codes: Linux-PAM's <security/_pam_types.h>, stable ABI. Named here so the
# core never imports pypam (tests check these equal pypam's).
PAM_SUCCESS = 0
PAM_PERM_DENIED = 6
PAM_AUTH_ERR = 7
PAM_AUTHINFO_UNAVAIL = 9
PAM_USER_UNKNOWN = 10
PAM_MAXTRIES = 11
PAM_IGNORE = 25

# syslog priorities: <syslog.h> (the numbers the syslog module exports).
LOG_ERR = 3
LOG_WARNING = 4
LOG_NOTICE = 5
LOG_INFO = 6

# pinutil's exit codes. Where a code has a PAM meaning it IS that PAM code, so
# `pinutil test`'s status is the PAM result of the check.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_POLICY_ERROR = 3
EXIT_TPM_UNSUPPORTED = 4
EXIT_CANCELLED = 5
EXIT_PERMISSION_DENIED = PAM_PERM_DENIED
EXIT_PIN_REFUSED = PAM_AUTH_ERR
EXIT_UNAVAILABLE = PAM_AUTHINFO_UNAVAIL
EXIT_UNKNOWN_USER = PAM_USER_UNKNOWN
EXIT_LOCKED = PAM_MAXTRIES
EXIT_ALREADY_ENROLLED = 12

_MAX_MESSAGE = 300  # of a message read back from the helper


def one_line(text: object) -> str:
    """`text` as one line (what pinutil prints and the PAM module logs)."""
    return " ".join(str(text).split()) or "error"


class PinutilError(Exception):
    """Base of all expected failures (see the module docstring for the attributes)."""

    token = "error"
    exit_code = EXIT_ERROR
    pam_result = PAM_AUTHINFO_UNAVAIL
    priority = LOG_ERR
    shown: str | None = None

    def user_message(self, user: str) -> str | None:
        """What the PAM module shows `user`, or None."""
        return self.shown.format(user=user) if self.shown else None

    def json_fields(self) -> dict:
        """The fields of pinutil's JSON answer for this error."""
        return {"result": self.token, "error": one_line(self)}

    @classmethod
    def from_json(cls, fields: dict) -> PinutilError:
        """The error again, from pinutil's JSON answer (`json_fields`)."""
        error = fields.get("error")
        return cls(one_line(error)[:_MAX_MESSAGE] if isinstance(error, str) else cls.token)


class PolicyError(PinutilError):
    """The policy file is unusable (names the file, line and reason)."""

    token, exit_code = "policy_error", EXIT_POLICY_ERROR


class TpmUnavailable(PinutilError):
    """No TPM could be reached, it failed, or it timed out."""

    token, exit_code = "tpm_unavailable", EXIT_UNAVAILABLE


class TpmUnsupported(PinutilError):
    """The TPM lacks a command or feature we rely on (e.g. PolicyNvWritten)."""

    token, exit_code = "tpm_unsupported", EXIT_TPM_UNSUPPORTED


class NotEnrolled(PinutilError):
    """The user has no PIN index. By design (PIN login is optional): LOG_INFO."""

    token, exit_code, priority = "not_enrolled", EXIT_UNAVAILABLE, LOG_INFO


class EnrolmentMismatch(NotEnrolled):
    """The PIN index has no enrolment record naming this account (a reused uid, an
    index from pinpam): for this account no PIN is enrolled, and none is offered.
    LOG_WARNING: a reused uid holding someone's PIN is worth an administrator's look."""

    token, priority = "enrolment_mismatch", LOG_WARNING


class PinNotOffered(PinutilError):
    """No PIN on this transaction, by design: a remote login, or the handle already
    sent one. The user may well have a PIN: this is not NotEnrolled."""

    token, exit_code, priority = "pin_not_offered", EXIT_UNAVAILABLE, LOG_NOTICE


class PinSkipped(PinutilError):
    """The user answered the PIN prompt with Enter: they chose the password. Nothing
    is shown and no attempt is spent; the stack goes on as if no PIN were enrolled."""

    token, exit_code, priority = "pin_skipped", EXIT_UNAVAILABLE, LOG_INFO


class AlreadyEnrolled(PinutilError):
    """setup was asked for a user who already has a PIN."""

    token, exit_code, priority = "already_enrolled", EXIT_ALREADY_ENROLLED, LOG_NOTICE


class InvalidPin(PinutilError):
    """The PIN breaks the policy; raised before any TPM command."""

    token, exit_code, pam_result = "invalid_pin", EXIT_PIN_REFUSED, PAM_AUTH_ERR
    priority, shown = LOG_NOTICE, "Invalid PIN."


class PinLocked(PinutilError):
    """The TPM refuses every PIN: the failure limit is reached."""

    token, exit_code, pam_result, priority = "locked", EXIT_LOCKED, PAM_MAXTRIES, LOG_NOTICE
    shown = ("PIN locked (too many failures). Use your password. "
             "Root can reset the PIN with: pinutil change {user}")

    def json_fields(self) -> dict:
        return {**super().json_fields(), "attempts_left": 0}


class WrongPin(PinutilError):
    """The TPM rejected the PIN and counted the failure."""

    token, exit_code, pam_result, priority = "wrong_pin", EXIT_PIN_REFUSED, PAM_AUTH_ERR, LOG_NOTICE

    def __init__(self, attempts_left: int) -> None:
        if attempts_left is None or attempts_left < 0:
            left = ""
        elif attempts_left == 0:
            left = " (PIN now locked)"
        elif attempts_left == 1:
            left = " (last attempt left)"
        else:
            left = f" ({attempts_left} attempts left)"
        super().__init__("Incorrect PIN" + left)
        self.attempts_left = attempts_left

    def user_message(self, user: str) -> str:
        left = self.attempts_left
        if left == 0:
            return "Incorrect PIN. " + PinLocked.shown.format(user=user)
        if left == 1:
            return "Incorrect PIN (1 attempt left)."
        if left is not None and left > 1:
            return f"Incorrect PIN ({left} attempts left)."
        return "Incorrect PIN."

    def json_fields(self) -> dict:
        return {**super().json_fields(), "attempts_left": self.attempts_left}

    @classmethod
    def from_json(cls, fields: dict) -> WrongPin:
        left = fields.get("attempts_left")
        return cls(left if type(left) is int else -1)


class PinThrottled(PinutilError):
    """pinutild refused the check without asking the TPM: too many wrong PINs in a row
    for this user, or the account's budget of TPM writes is spent (docs/pinutild.md);
    `retry_after` whole seconds until it may go to the TPM again. No attempt was spent."""

    token, exit_code, pam_result, priority = "throttled", EXIT_PIN_REFUSED, PAM_AUTH_ERR, LOG_NOTICE

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def user_message(self, user: str) -> str:
        if self.retry_after:
            return (f"Too many wrong PINs: try again in {self.retry_after} s, "
                    "or use your password.")
        return "Too many wrong PINs: try again later, or use your password."

    def json_fields(self) -> dict:
        return {**super().json_fields(), "retry_after": self.retry_after}

    @classmethod
    def from_json(cls, fields: dict) -> PinThrottled:
        back = super().from_json(fields)
        wait = fields.get("retry_after")
        back.retry_after = wait if type(wait) is int and 0 < wait <= 3600 else None
        return back


class PermissionDenied(PinutilError):
    """The caller may not act on this user or this object."""

    token, exit_code = "permission_denied", EXIT_PERMISSION_DENIED


class PasswordRefused(PermissionDenied):
    """The enrolment proof failed: PAM did not accept the account password."""

    token, exit_code, priority = "wrong_password", EXIT_PIN_REFUSED, LOG_NOTICE


class UnknownUser(PinutilError):
    """No such user in the password database."""

    token, exit_code = "unknown_user", EXIT_UNKNOWN_USER
    pam_result, priority = PAM_USER_UNKNOWN, LOG_NOTICE


class MasterKeyError(PinutilError):
    """The master key is missing, already present, or its recovery file is unusable."""

    token, priority = "master_key_error", LOG_WARNING


class Cancelled(PinutilError):
    """The operator declined, gave no input, or there is no terminal to ask on."""

    token, exit_code, priority = "cancelled", EXIT_CANCELLED, LOG_NOTICE


#: Every class that declares a token, most specific first (a subclass before its base).
VOCABULARY: tuple[type[PinutilError], ...] = (
    WrongPin, PinThrottled, InvalidPin, PasswordRefused, PinLocked, EnrolmentMismatch, NotEnrolled,
    PinNotOffered, PinSkipped, TpmUnavailable, TpmUnsupported, AlreadyEnrolled,
    PermissionDenied, UnknownUser, PolicyError, Cancelled, MasterKeyError, PinutilError,
)
_BY_TOKEN = {cls.token: cls for cls in VOCABULARY}


def from_json(fields: dict) -> PinutilError:
    """The domain error a pinutil JSON answer names; an unknown or missing `result`
    (or "success" where an error was expected) is TpmUnavailable: fail closed."""
    result = fields.get("result")
    cls = _BY_TOKEN.get(result) if isinstance(result, str) else None
    if cls is None:
        return TpmUnavailable(f"pinutil answered {one_line(result)[:40]!r}")
    return cls.from_json(fields)
