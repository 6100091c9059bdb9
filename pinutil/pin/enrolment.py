"""Enrolment records: who a PIN index was enrolled for, checked at every login.

The PIN index of a user is `nv_base + uid`: the TPM knows a uid, not a person. When an
account is deleted and its uid given to a new account, the new account would inherit
the old owner's PIN. So `pinutil setup` (and `change`, `adopt`) writes a record

    <enrolment_dir>/<uid>:   uid=1001 / user=alice / nv_index=0x010003e9 / enrolled=<UTC>

and a login offers the PIN only if the record names the same uid, user name and index
(`verify`); `pinutil delete` removes it. No record, or one that does not match, means
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
from pinutil.errors import EnrolmentMismatch, PinutilError
from pinutil.pin import state
from pinutil.record import Record

MAX_RECORD_BYTES = 4096


class EnrolmentRecord(Record):
    """What setup wrote: the account and the index it enrolled, and when (UTC)."""

    __slots__ = _FIELDS = ("uid", "user", "nv_index", "enrolled")
    uid: int
    user: str
    nv_index: int
    enrolled: str

    def text(self) -> str:
        return (f"uid={self.uid}\nuser={self.user}\nnv_index=0x{self.nv_index:08x}\n"
                f"enrolled={self.enrolled}\n")

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid}) on {self.enrolled}"

    def as_json(self) -> dict:
        return {"uid": self.uid, "user": self.user, "nv_index": f"0x{self.nv_index:08x}",
                "enrolled": self.enrolled}


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
        return EnrolmentRecord(uid=int(fields["uid"]), user=fields["user"],
                               nv_index=int(fields["nv_index"], 16),
                               enrolled=fields["enrolled"])
    except (ValueError, KeyError, UnicodeDecodeError):
        raise RecordError(f"enrolment record {path} is unreadable") from None


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


def verify(directory: str, name: str, uid: int, nv_index: int) -> EnrolmentRecord:
    """The record, if it names this account and index; else EnrolmentMismatch saying why
    (the PIN must then not be offered)."""
    try:
        found = read(directory, uid)
    except RecordError as e:
        found = e
    return judge(found, name, uid, nv_index)


def judge(found: EnrolmentRecord | RecordError | None, name: str, uid: int,
          nv_index: int) -> EnrolmentRecord:
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
    return found


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
