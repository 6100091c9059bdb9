"""Domain errors of the PIN and master-key core.

Every failure the core can report is one of these classes; the CLI maps them to exit
codes and the PAM modules map them to PAM results (one table each, never by message).
"""
from __future__ import annotations


class PinutilError(Exception):
    """Base of all expected failures. `str(e)` is safe to show a user: it never
    contains a PIN, a token or a secret."""


class PolicyError(PinutilError):
    """The policy file is unusable (names the file, line and reason)."""


class TpmUnavailable(PinutilError):
    """No TPM could be reached, it failed, or it timed out."""


class TpmUnsupported(PinutilError):
    """The TPM lacks a command or feature we rely on (e.g. PolicyNvWritten)."""


class NotEnrolled(PinutilError):
    """The user has no PIN index."""


class EnrolmentMismatch(NotEnrolled):
    """The PIN index has no enrolment record naming this account (a reused uid, an
    index from pinpam): the PIN is not offered."""


class AlreadyEnrolled(PinutilError):
    """setup was asked for a user who already has a PIN."""


class InvalidPin(PinutilError):
    """The PIN breaks the policy; raised before any TPM command."""


class WrongPin(PinutilError):
    """The TPM rejected the PIN and counted the failure."""

    def __init__(self, attempts_left: int) -> None:
        super().__init__("Incorrect PIN")
        self.attempts_left = attempts_left


class PinLocked(PinutilError):
    """The TPM refuses every PIN: the failure limit is reached."""


class PermissionDenied(PinutilError):
    """The caller may not act on this user or this object."""


class PasswordRefused(PermissionDenied):
    """The enrolment proof failed: PAM did not accept the account password."""


class UnknownUser(PinutilError):
    """No such user in the password database."""


class MasterKeyError(PinutilError):
    """The master key is missing, already present, or its recovery file is unusable."""
