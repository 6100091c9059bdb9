"""A PIN's state as the login path sees it, without any TPM code.

`PinStatus` is what `PinIndex.status()` reads from the TPM and what the helper and the
service report; it lives apart from pinutil.pin.index so that a PAM host using the
helper or the service imports no TPM code at all (tests check sys.modules).
"""
from __future__ import annotations

from pinutil.record import Record


class PinStatus(Record):
    """What the TPM says about a user's PIN, read without spending an attempt.

    `detail` explains a non-obvious state; `half_finished` is an index that a killed
    setup defined but never wrote (it protects nothing: setup replaces it, its owner
    deletes it without a PIN).
    """

    __slots__ = _FIELDS = ("enrolled", "failures", "limit", "locked", "attempts_left", "detail",
                           "half_finished")
    _DEFAULTS = {"detail": "", "half_finished": False}  # noqa: RUF012 - read-only
    enrolled: bool
    failures: int
    limit: int
    locked: bool
    attempts_left: int
    detail: str
    half_finished: bool


NOT_ENROLLED = PinStatus(enrolled=False, failures=0, limit=0, locked=False, attempts_left=0)


def prompt_text(failures: int, attempts_left: int) -> str:
    """The PIN prompt for a status: how many attempts are left once one was wrong. One
    text for every backend: tpm_pin asks it for the direct and helper backends, pinutild
    sends it in its pin-login conversation (docs/pinutild.md)."""
    if failures == 0:
        return "PIN: "
    if attempts_left == 1:
        return "PIN (last attempt): "
    return f"PIN ({attempts_left} attempts left): "
