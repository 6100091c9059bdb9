"""Enrolment records: who a PIN index was enrolled for, checked at every login.

The PIN index of a user is `nv_base + uid`: the TPM knows a uid, not a person. When an
account is deleted and its uid given to a new account, the new account would inherit
the old owner's PIN. So `pinutil setup` (and `change`, `adopt`) writes a record

    <enrolment_dir>/<uid>:   uid=1001 / user=alice / nv_index=0x010003e9 / enrolled=<UTC>
                             / salt_key=<the salt key Name recorded then, hex>

and a login offers the PIN only if the record names the same uid, user name and index,
and the salt key Name recorded now (`verify`); `pinutil delete` removes it.

Why the salt key: a TPM Clear (the platform hierarchy, the firmware's menu, the lockout
password) deletes every PIN index, changes the owner seed and so the salt key's Name,
and empties the owner password: whoever cleared it can define an index with a PIN of
their own at an enrolled user's handle. Salted checks then refuse (the Name is not the
recorded one) until root runs `pinutil salt-key record`; a record bound to the old Name
keeps refusing after that, so the re-record voids every enrolment instead of adopting
what was planted. A record without the line (written before it existed) is accepted as
before; `pinutil migrate-state` (run by the package and `make install`) and
`pinutil salt-key record` bind such records to the Name recorded until then
(`bind_unbound`). Nothing notices a Clear under `pin_session = plain` (README). No record, or one that does not match, means
no PIN prompt (`EnrolmentMismatch`, PAM_AUTHINFO_UNAVAIL): an index enrolled by pinpam
or before records existed is offered only after root runs `pinutil adopt USER`.

Where: `enrolment_dir` is derived by the policy from its `state_dir` (the service's
state directory, pin/state.py), so records are written by whoever enrols: the
service, root's `pinutil`, or the fallback's set-gid `pinutil`. Trust (pin/state.py):
the state directory owned by root or the service user and writable by no one else;
`enrolments` the same, closed to others; a record a regular file (no symlink) owned
by root, the service user or its own uid, not writable by group or others. Everything
is opened relative to the checked directories' descriptors.

Only the stdlib is imported: `verify` is on the login path.
"""
from __future__ import annotations

import errno
import os
import time

from pinutil import securefile
from pinutil.errors import EnrolmentMismatch, PinutilError, TpmUnavailable
from pinutil.pin import salt_key, state
from pinutil.record import Record

MAX_RECORD_BYTES = 4096


class EnrolmentRecord(Record):
    """What setup wrote: the account and the index it enrolled, when (UTC), and the
    salt key Name recorded then (None: a record from before that line, or made while no
    Name was recorded)."""

    __slots__ = _FIELDS = ("uid", "user", "nv_index", "enrolled", "salt_key")
    _DEFAULTS = {"salt_key": None}  # noqa: RUF012 - read-only (record.py)
    uid: int
    user: str
    nv_index: int
    enrolled: str
    salt_key: bytes | None

    def text(self) -> str:
        bound = "" if self.salt_key is None else f"salt_key={self.salt_key.hex()}\n"
        return (f"uid={self.uid}\nuser={self.user}\nnv_index=0x{self.nv_index:08x}\n"
                f"enrolled={self.enrolled}\n{bound}")

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid}) on {self.enrolled}"

    def as_json(self) -> dict:
        return {"uid": self.uid, "user": self.user, "nv_index": f"0x{self.nv_index:08x}",
                "enrolled": self.enrolled,
                "salt_key": None if self.salt_key is None else self.salt_key.hex()}


class RecordError(PinutilError):
    """The enrolment directory or a record is unusable (names the path and why)."""


def open_dir(directory: str) -> int | None:
    """An fd of the trusted records' directory; None if it (or the state directory)
    does not exist."""
    return _in_state_dir(directory, state.open_state_dir, state.open_child_dir)


def _in_state_dir(directory: str, open_state, open_child, may_make=None) -> int | None:
    """`open_child(state_fd, state_dir, name)` for the records' directory, on the state
    directory `open_state` gave (None if it gave none); `may_make(state_fd)` may refuse
    first. A StateError becomes a RecordError."""
    state_dir, name = os.path.split(directory.rstrip("/"))
    try:
        state_fd = open_state(state_dir)
        if state_fd is None:
            return None
        try:
            if may_make is not None:
                may_make(state_fd)
            return open_child(state_fd, state_dir, name)
        finally:
            os.close(state_fd)
    except state.StateError as e:
        raise RecordError(f"enrolment records: {e}") from None


def parse(data: bytes, path: str) -> EnrolmentRecord:
    try:
        fields = dict(line.split("=", 1) for line in data.decode("utf-8").splitlines())
        bound = fields.get("salt_key")
        return EnrolmentRecord(uid=int(fields["uid"]), user=fields["user"],
                               nv_index=int(fields["nv_index"], 16),
                               enrolled=fields["enrolled"],
                               salt_key=None if bound is None else _name(bound))
    except (ValueError, KeyError, UnicodeDecodeError):
        raise RecordError(f"enrolment record {path} is unreadable") from None


def _name(text: str) -> bytes:
    """A salt key Name as salt_key.py records it (SHA-256: 000b and 32 bytes, lowercase
    hex); ValueError otherwise."""
    if len(text) != 68 or not text.startswith("000b") or text != text.lower():
        raise ValueError(text)
    return bytes.fromhex(text)


def read(directory: str, uid: int) -> EnrolmentRecord | None:
    """The record of `uid`, None if there is none; RecordError if it is untrustworthy."""
    dfd = open_dir(directory)
    if dfd is None:
        return None
    path = os.path.join(directory, str(uid))
    try:
        data = securefile.read_file(str(uid), owners=state.trusted_owners(uid),
                                    forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=MAX_RECORD_BYTES, dir_fd=dfd)
    except securefile.Refused as e:
        raise RecordError(f"enrolment record {path} {e}") from None
    finally:
        os.close(dfd)
    if data is None:
        return None
    return parse(data, path)


def verify(directory: str, name: str, uid: int, nv_index: int,
           salt_key_record: str) -> EnrolmentRecord:
    """The record, if it names this account and index and was made under the salt key
    recorded now in `salt_key_record` (a path: the policy's); else EnrolmentMismatch
    saying why (the PIN must then not be offered)."""
    try:
        found = read(directory, uid)
    except RecordError as e:
        found = e
    return judge(found, name, uid, nv_index, salt_key_record)


def judge(found: EnrolmentRecord | RecordError | None, name: str, uid: int,
          nv_index: int, salt_key_record: str) -> EnrolmentRecord:
    """verify's verdict on what `read` gave (a record, None, or its RecordError)."""
    if isinstance(found, RecordError):
        raise EnrolmentMismatch(str(found))
    if found is None:
        raise EnrolmentMismatch(
            f"the PIN index 0x{nv_index:08x} of {name} (uid {uid}) has no enrolment record "
            f"(enrolled by pinpam or an older pinutil?): root may run `pinutil adopt {name}`")
    if (found.uid, found.user, found.nv_index) != (uid, name, nv_index):
        raise EnrolmentMismatch(
            f"the PIN index 0x{nv_index:08x} was enrolled for {found.describe()}, not for "
            f"{name} (uid {uid}): a reused uid? root: `pinutil delete {name}`")
    if found.salt_key is not None:
        _judge_salt_key(found.salt_key, salt_key_record, name)
    return found


def _judge_salt_key(bound: bytes, salt_key_record: str, name: str) -> None:
    """EnrolmentMismatch unless `bound`, the Name the record was made under, is the one
    recorded now."""
    try:
        recorded = salt_key.load_if_present(salt_key_record)
    except TpmUnavailable as e:
        raise EnrolmentMismatch(str(e)) from None
    if recorded is None:
        raise EnrolmentMismatch(
            f"the PIN of {name} was enrolled under the salt key {bound.hex()[:16]}..., and "
            f"no salt key is recorded now in {salt_key_record}: root runs "
            "`pinutil salt-key record`; if the TPM was cleared since, every PIN must be "
            "enrolled again")
    if recorded != bound:
        raise EnrolmentMismatch(
            f"the PIN of {name} was enrolled under the salt key {bound.hex()[:16]}..., "
            f"not the recorded one ({recorded.hex()[:16]}...): if the TPM was cleared or "
            "replaced since, that deleted every PIN and whatever is at the handle now was "
            "not enrolled here: every PIN must be enrolled again (root: `pinutil delete "
            f"{name}`, then `pinutil setup`); if only the record {salt_key_record} was "
            "damaged, root runs `pinutil salt-key record` on this TPM")


def _ensure_dir(directory: str, as_root: bool) -> int:
    """The records' directory, made if missing by root (the state directory too) or by
    the state directory's owner (the service, in its own directory)."""
    dfd = open_dir(directory)
    if dfd is not None:
        return dfd
    missing = RecordError(
        f"the enrolment directory {directory} does not exist: root creates it (a "
        "`pinutil setup` run by root does, and so do `make install` and the package)")

    def may_make(state_fd: int) -> None:
        if not (as_root or os.fstat(state_fd).st_uid == os.geteuid()):
            raise missing

    dfd = _in_state_dir(directory, state.ensure_state_dir if as_root else state.open_state_dir,
                        state.ensure_child_dir, may_make)
    if dfd is None:
        raise missing
    return dfd


def check_writable(directory: str, as_root: bool) -> None:
    """Before a PIN index is created: a record can be written (setup fails early
    rather than leave an index nobody can log in with)."""
    dfd = _ensure_dir(directory, as_root)
    try:
        if not os.access(".", os.W_OK | os.X_OK, dir_fd=dfd, effective_ids=True):
            raise RecordError(f"cannot write enrolment records in {directory}")
    finally:
        os.close(dfd)


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write(directory: str, record: EnrolmentRecord, as_root: bool) -> None:
    """Replace the record of `record.uid` atomically (temporary file, fsync, rename)."""
    if any(c in record.user for c in "\n\r=\0"):
        raise RecordError(f"user name {record.user[:64]!r} cannot be recorded")
    dfd = _ensure_dir(directory, as_root)
    try:
        securefile.replace_file(dfd, str(record.uid), record.text().encode("utf-8"), 0o640,
                                owner=state.owner_for_new_files(dfd))
    except OSError as e:
        raise RecordError(f"cannot write the enrolment record in {directory}: "
                          f"{e.strerror}") from None
    finally:
        os.close(dfd)


def remove(directory: str, uid: int) -> bool:
    """Delete the record of `uid`; False if there was none."""
    dfd = open_dir(directory)
    if dfd is None:
        return False
    try:
        os.unlink(str(uid), dir_fd=dfd)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise RecordError(f"{directory}/{uid} is a directory") from None
        raise RecordError(f"cannot remove the enrolment record {directory}/{uid}: "
                          f"{e.strerror}") from None
    finally:
        os.close(dfd)


def _uids(directory: str) -> list[int]:
    dfd = open_dir(directory)
    if dfd is None:
        return []
    try:
        return sorted(int(n) for n in os.listdir(dfd) if n.isdigit() and n.isascii())
    finally:
        os.close(dfd)


def _records(directory: str) -> list[EnrolmentRecord]:
    """Every readable record (one login would refuse is skipped: it stays refused)."""
    found = []
    for uid in _uids(directory):
        try:
            record = read(directory, uid)
        except RecordError:
            continue
        if record is not None:
            found.append(record)
    return found


def bind_unbound(directory: str, name: bytes) -> list[str]:
    """Root: every record without a salt key line (written before it existed) is bound
    to `name`, the Name recorded while it was made; the users bound."""
    bound = []
    for record in _records(directory):
        if record.salt_key is None:
            write(directory, record.replace(salt_key=name), as_root=True)
            bound.append(record.user)
    return bound


def made_under_another_key(directory: str, name: bytes) -> list[str]:
    """The users whose records were made under a salt key other than `name`: no login
    with those PINs once `name` is the recorded one."""
    return [r.user for r in _records(directory) if r.salt_key not in (None, name)]
