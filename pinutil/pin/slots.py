"""Where a user's PIN index lives: one of two NV handles, the one the record names.

A PIN_FAIL index cannot be given a new PIN in place (its counter can be written once;
NV_ChangeAuth would need a policy branch with PolicyAuthValue, which lets wrong PINs
be tried past the limit: docs/pinutil.md, "Changing a PIN"). So a change enrols the
new PIN at the user's other handle, then switches the enrolment record to it, then
deletes the old index (pin/lifecycle.py): at every moment the record names a written
index holding the old or the new PIN, and the login uses the one the record names.

    primary  nv_base + uid             (pinpam's handle; where every PIN comes home)
    spare    primary + SPARE_OFFSET    (used during a change, and after a killed one)

The spare handles are the upper half of the owner NV range and no user's primary can
be there: PIN login is for `nv_base + uid <= LAST_PRIMARY`, so two users' handles never
meet. A record naming any other handle is refused at login (enrolment.verify).

Only the stdlib is imported: the login path asks `current`.
"""
from __future__ import annotations

from pinutil import errors
from pinutil.pin import enrolment
from pinutil.tpm import OWNER_NV_FIRST, OWNER_NV_LAST

SPARE_OFFSET = (OWNER_NV_LAST - OWNER_NV_FIRST + 1) // 2   # 0x200000
LAST_PRIMARY = OWNER_NV_FIRST + SPARE_OFFSET - 1             # 0x011FFFFF


def primary(uid: int, nv_base: int) -> int:
    """pinpam's handle for a user: nv_base + uid, in the lower half of the owner range."""
    if not OWNER_NV_FIRST <= nv_base <= OWNER_NV_LAST:
        raise errors.PinutilError(f"nv_base 0x{nv_base:x} is outside the owner NV range")
    if uid < 0 or nv_base + uid > LAST_PRIMARY:
        raise errors.PinutilError(
            f"uid {uid} does not fit the TPM NV range (nv_base 0x{nv_base:08x} + uid must be "
            f"<= 0x{LAST_PRIMARY:08x}: the upper half of the owner range holds the spare "
            "handles PIN changes use); PIN login is not available for this user")
    return nv_base + uid


def of_user(uid: int, nv_base: int) -> tuple[int, int]:
    """(primary, spare): the only two handles a PIN of `uid` may be at."""
    first = primary(uid, nv_base)
    return first, first + SPARE_OFFSET


def other(handle: int, uid: int, nv_base: int) -> int:
    """The user's handle that is not `handle` (one of theirs)."""
    first, spare = of_user(uid, nv_base)
    if handle not in (first, spare):
        raise errors.PinutilError(f"NV index 0x{handle:08x} is not a PIN handle of uid {uid}")
    return spare if handle == first else first


def current(enrolment_dir: str, uid: int, nv_base: int) -> int:
    """The handle the user's PIN is at: the one their enrolment record names when it is
    one of their two, else the primary (pinpam's index, no record yet, or a record that
    login refuses anyway: enrolment.verify compares it with this handle). One file
    read, no TPM command."""
    return _handle(_read(enrolment_dir, uid), of_user(uid, nv_base))


def _read(enrolment_dir: str, uid: int):
    try:
        return enrolment.read(enrolment_dir, uid)
    except enrolment.RecordError as e:
        return e


def _handle(found, handles: tuple[int, int]) -> int:
    if isinstance(found, enrolment.EnrolmentRecord) and found.nv_index in handles:
        return found.nv_index
    return handles[0]


class Lookup:
    """A login's one read of a user's record: `handle` (as `current`) and `verified()`
    (enrolment.verify's verdict on the same read: a login reads the record once)."""

    __slots__ = ("_found", "handle", "name", "salt_key_record", "uid")

    def __init__(self, enrolment_dir: str, name: str, uid: int, nv_base: int,
                 salt_key_record: str) -> None:
        self.name, self.uid, self.salt_key_record = name, uid, salt_key_record
        self._found = _read(enrolment_dir, uid)
        self.handle = _handle(self._found, of_user(uid, nv_base))

    def verified(self) -> enrolment.EnrolmentRecord:
        """The record if it names this account and `handle` and was made under the salt
        key recorded now; else EnrolmentMismatch."""
        return enrolment.judge(self._found, self.name, self.uid, self.handle,
                               self.salt_key_record)


def lookup(cache: dict, policy, name: str, uid: int) -> Lookup:
    """The Lookup of `uid` kept in `cache` (uid -> Lookup, as long as one request or
    one login), read on first use."""
    found = cache.get(uid)
    if found is None:
        found = cache[uid] = Lookup(policy.enrolment_dir, name, uid, policy.nv_base,
                                    policy.salt_key_record)
    return found
