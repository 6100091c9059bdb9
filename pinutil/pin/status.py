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
