"""Enrol, change and delete a PIN: the one implementation `pinutil` and pinutild share.

Each function does the TPM part of one command on an open `PinIndex` of `user`, for
`caller`, under `policy`, and writes or removes the enrolment record. Who may do what
(pinutil.users) is checked by the caller of these functions before the TPM is opened,
and again here where the rule depends on the caller (an old PIN, a PIN to delete).
Whether the account password was proven is the caller's business: `pinutil` runs the
proof itself, pinutild has its proof process run it (docs/pinutild.md).

The record directory is created only by a root process (`os.geteuid()`): root's
`pinutil`, or pinutild run as root; the set-gid `pinutil` and the service's own
account can only write into it.
"""
from __future__ import annotations

import os

from pinutil import users
from pinutil.errors import AlreadyEnrolled, InvalidPin, NotEnrolled, TpmUnavailable
from pinutil.pin import enrolment
from pinutil.pin.policy import Policy
from pinutil.users import User


def _as_root() -> bool:
    return os.geteuid() == 0


def check_writable(policy: Policy) -> None:
    """Before a PIN index is created or replaced: a record can be written."""
    enrolment.check_writable(policy.enrolment_dir, as_root=_as_root())


def write_record(policy: Policy, user: User, handle: int) -> enrolment.EnrolmentRecord:
    record = enrolment.EnrolmentRecord(uid=user.uid, user=user.name, nv_index=handle,
                                       enrolled=enrolment.now_utc())
    enrolment.write(policy.enrolment_dir, record, as_root=_as_root())
    return record


def already_enrolled(caller: User, user: User) -> AlreadyEnrolled:
    target = "" if user.uid == caller.uid else f" {user.name}"
    return AlreadyEnrolled(f"{user.name} already has a PIN: to replace it, run "
                           f"`pinutil change{target}` (or `pinutil delete{target}` "
                           "to remove it)")


def require_written(index, user: User) -> None:
    """NotEnrolled, in the words status uses, unless a PIN is enrolled at `index`."""
    st = index.status()
    if st.half_finished:
        raise NotEnrolled(f"{user.name} has no PIN: {st.detail}")
    if not st.enrolled:
        raise NotEnrolled(f"{user.name} has no PIN enrolled")


def setup(index, policy: Policy, caller: User, user: User, pin: bytes) -> dict:
    """Enrol `pin` (checked against `policy` by the caller): the index, then its record
    (no record: the index goes again), then the salt key made persistent. The reply's
    fields: limit, salt_key, replaced_half_finished (when a killed setup left one)."""
    limit = policy.pin_lockout_max_attempts
    if index.status().enrolled:
        raise already_enrolled(caller, user)
    replaced = index.remove_if_half_finished()
    index.define(pin, limit, salted=policy.salted)
    try:
        write_record(policy, user, index.handle)
    except BaseException:
        index.delete()  # no record, no login: do not leave an index behind
        raise
    fields = {"limit": limit, "salt_key": _persist_salt_key(index.tpm)}
    if replaced:
        fields["replaced_half_finished"] = True
    return fields


def _persist_salt_key(tpm) -> str:
    """Best effort after an enrolment: without a persistent salt key every PIN check
    creates one (slower, not weaker), so a failure here must not fail the setup."""
    from pinutil.tpm import sapi

    try:
        return sapi.persist_salt_key(tpm)
    except TpmUnavailable as e:
        return f"not persistent ({e})"


def change(index, policy: Policy, caller: User, user: User, old: bytes | None,
           new: bytes) -> dict:
    """Replace the PIN by `new`; a caller other than root proves `old` first (a wrong
    one counts like a failed login, and the index stays as it was)."""
    limit = policy.pin_lockout_max_attempts
    check_writable(policy)
    require_written(index, user)
    if users.change_needs_old_pin(caller):
        if old is None:
            raise InvalidPin("changing your PIN needs the current PIN")
        # Only to an index recorded as theirs: otherwise the new owner of a reused uid,
        # knowing the old owner's PIN, would make it a PIN login of their own without
        # the account password.
        enrolment.verify(policy.enrolment_dir, user.name, user.uid, index.handle)
        index.check(old, salted=policy.salted)
    index.replace(new, limit, salted=policy.salted)
    write_record(policy, user, index.handle)
    return {"limit": limit}


def delete(index, policy: Policy, caller: User, user: User, pin: bytes | None) -> dict:
    """Delete the PIN (a caller other than root proves it with `pin`) or a half-finished
    index (no PIN in it: its owner deletes it without one), and the record. The reply's
    field `what`: "PIN" or "half-finished PIN index"."""
    st = index.status()
    if not st.enrolled and not st.half_finished:
        enrolment.remove(policy.enrolment_dir, user.uid)  # a stale record, if any
        raise NotEnrolled(f"{user.name} has no PIN enrolled")
    if st.enrolled and users.delete_needs_pin(caller):
        if pin is None:
            raise InvalidPin("deleting your PIN needs the PIN")
        index.check(pin, salted=policy.salted)
    index.delete(only_half_finished=not st.enrolled and not caller.is_root)
    enrolment.remove(policy.enrolment_dir, user.uid)
    return {"what": "half-finished PIN index" if st.half_finished else "PIN"}
