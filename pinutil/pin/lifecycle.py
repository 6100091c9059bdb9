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

import contextlib
import fcntl
import os
from collections.abc import Iterator

from pinutil import users
from pinutil.errors import (
    AlreadyEnrolled,
    InvalidPin,
    NotEnrolled,
    PermissionDenied,
    PinutilError,
    TpmUnavailable,
)
from pinutil.pin import enrolment, salt_key, slots
from pinutil.pin.policy import Policy
from pinutil.users import User


def _as_root() -> bool:
    return os.geteuid() == 0


def check_writable(policy: Policy) -> None:
    """Before a PIN index is created or replaced: a record can be written."""
    enrolment.check_writable(policy.enrolment_dir, as_root=_as_root())


@contextlib.contextmanager
def _locked(policy: Policy) -> Iterator[None]:
    """Hold the records' directory's lock (flock) while a PIN is enrolled, changed or
    deleted: two changes of one PIN at once (pinutild and root's pinutil) would each
    remove what the other had just defined at the spare handle. Logins take no lock."""
    dfd = enrolment.open_dir(policy.enrolment_dir)
    if dfd is None:  # no records yet (setup and change make the directory first)
        yield
        return
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(dfd)  # releases the lock


def _other_slot(index, policy: Policy, user: User):
    """The user's PinIndex at the handle their record does not name (pin/slots.py)."""
    return index.at(slots.other(index.handle, user.uid, policy.nv_base))


def _remove_leftover(index, policy: Policy, user: User) -> None:
    """What a killed change left at the other handle (our layout, no record names it);
    another application's index there, and another user's enrolment, is left alone."""
    other = _other_slot(index, policy, user)
    if _someones_enrolment(policy, user, other.handle) is None:
        with contextlib.suppress(NotEnrolled):
            other.remove_leftover()


def _someones_enrolment(policy: Policy, user: User, handle: int) -> str | None:
    """Why the index at `handle` (one of `user`'s) may be another user's PIN, or None.
    Code before the spare handles enrolled uid U at nv_base + U for any U, so a spare
    handle (primary + SPARE_OFFSET) is the primary of uid + SPARE_OFFSET: if that uid
    has an enrolment record (even an unreadable one), the index there is theirs."""
    owner = handle - policy.nv_base
    if owner == user.uid:
        return None
    try:
        if enrolment.read(policy.enrolment_dir, owner) is None:
            return None
    except enrolment.RecordError:
        pass
    return (f"NV index 0x{handle:08x}, the spare handle a change of {user.name}'s PIN "
            f"needs, is the PIN index of uid {owner} (enrolled before PIN changes used "
            "spare handles; that uid has an enrolment record)")


def recorded_salt_key(policy: Policy) -> bytes | None:
    """The salt key Name recorded now, which a new record is bound to (None when there
    is none: pin_session = plain before any root setup); TpmUnavailable if the record
    is unusable."""
    return salt_key.load_if_present(policy.salt_key_record)


def write_record(policy: Policy, user: User, handle: int,
                 salt_key_name: bytes | None) -> enrolment.EnrolmentRecord:
    """The record of `user`'s PIN at `handle`, bound to `salt_key_name`
    (recorded_salt_key)."""
    record = enrolment.EnrolmentRecord(uid=user.uid, user=user.name, nv_index=handle,
                                       enrolled=enrolment.now_utc(), salt_key=salt_key_name)
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


#: What every setup on a TPM whose owner hierarchy has no password says (review 3's R3;
#: README, "The owner hierarchy"). Not `owner protect` done for the admin: it costs
#: other software its owner hierarchy (below), which is the admin's choice to make.
OWNER_UNPROTECTED = (
    "the TPM's owner hierarchy is not protected (empty owner password): anyone who can "
    "boot this machine from another medium (a live USB stick; no account, no disk "
    "access, disk encryption does not stop them) can replace this PIN with one of their "
    "own, which then logs in as this user (screen lock, sudo). `pinutil owner protect` "
    "(root) closes this; its cost: other software that uses the owner hierarchy with "
    "the empty password then fails where it needs it (e.g. systemd-cryptenroll "
    "--tpm2-device or clevis creating their primary key, tpm2-tools run with -C o and "
    "no -P); README, \"The owner hierarchy\"")


def owner_unprotected(tpm, policy: Policy) -> bool:
    """Whether the TPM's owner hierarchy has no password (TPM2_PT_PERMANENT
    ownerAuthSet, what `pinutil status` reports); PermissionDenied instead when the
    policy says `require_owner_protection = yes`.

    Only enrolment asks (one GetCapability per setup). A login does not: it would
    cost every login one more TPM command for little. What the option guards is that
    no PIN is enrolled where anyone with boot access can replace it; once a PIN was
    enrolled under a protected owner, that attacker cannot take the password off
    (HierarchyChangeAuth needs it; a TPM2_Clear, through the lockout hierarchy or an
    open platform one, gives a new owner seed, which the salt key record refuses at
    the next login): it comes off only by root's `pinutil owner release`."""
    if tpm.hierarchy_auth_set()["owner"]:
        return False
    if policy.require_owner_protection:
        raise PermissionDenied(
            "the policy says require_owner_protection = yes and the TPM's owner "
            "hierarchy is not protected: nothing was enrolled; root runs `pinutil owner "
            "protect` first (README, \"The owner hierarchy\")")
    return True


def setup(index, policy: Policy, caller: User, user: User, pin: bytes) -> dict:
    """Enrol `pin` (checked against `policy` by the caller): the index, then its record
    (no record: the index goes again), then the salt key made persistent. The reply's
    fields: limit, salt_key, replaced_half_finished (when a killed setup left one),
    owner_unprotected. Refused before any change when the policy requires owner
    protection and the TPM has none."""
    limit = policy.pin_lockout_max_attempts
    unprotected = owner_unprotected(index.tpm, policy)
    with _locked(policy):
        if index.status().enrolled:
            raise already_enrolled(caller, user)
        replaced = index.remove_if_half_finished()
        _remove_leftover(index, policy, user)
        index.define(pin, limit, salted=policy.salted)
        try:
            # Read after define(): root's first salted setup records the Name there.
            write_record(policy, user, index.handle, recorded_salt_key(policy))
        except BaseException:
            index.delete()  # no record, no login: do not leave an index behind
            raise
    fields = {"limit": limit, "salt_key": _persist_salt_key(index.tpm),
              "owner_unprotected": unprotected}
    if replaced:
        fields["replaced_half_finished"] = True
    return fields


def setup_result(user_name: str, fields: dict) -> dict:
    """pinutil's result for a setup's fields (direct, or pinutild's reply): the human
    line and, whenever the owner hierarchy is unprotected, `owner_warning`, which
    pinutil prints on its own line (stderr) every time. pinutil's own words, never
    the service's text: a long one would be cut short where the service's are."""
    result = {**fields, "message": f"PIN set up for {user_name} ({fields.get('limit')} "
                                   "failed attempts lock it)"}
    if fields.get("owner_unprotected"):
        result["owner_warning"] = OWNER_UNPROTECTED
    return result


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
    one counts like a failed login, and nothing else changes).

    `index` is at the handle the record names (slots.current). The new PIN is enrolled
    at the user's other handle, the record switched to it, and only then the old index
    deleted; if that was the spare handle, the same again brings the PIN home to
    nv_base + uid (pinpam's handle). A kill at any point leaves the record naming a
    written index with the old or the new PIN (and at most an unrecorded index, which
    logs no one in, for the next change, setup or delete to remove)."""
    limit = policy.pin_lockout_max_attempts
    check_writable(policy)
    with _locked(policy):
        require_written(index, user)
        # Before the old PIN is checked: a refusal here spends no attempt.
        conflict = _someones_enrolment(
            policy, user, slots.other(index.handle, user.uid, policy.nv_base))
        if conflict:
            raise PinutilError(f"cannot change the PIN: {conflict}; nothing was changed "
                               "(`pinutil delete` and `pinutil setup` replace the PIN "
                               "without the spare handle)")
        if users.change_needs_old_pin(caller):
            if old is None:
                raise InvalidPin("changing your PIN needs the current PIN")
            # Only to an index recorded as theirs: otherwise the new owner of a reused
            # uid, knowing the old owner's PIN, would make it a PIN login of their own
            # without the account password.
            enrolment.verify(policy.enrolment_dir, user.name, user.uid, index.handle,
                             policy.salt_key_record)
            index.check(old, salted=policy.salted)
        # No checks of the new PIN or the salt key beforehand: define() makes them
        # before it changes anything, and a refusal there leaves the old PIN in place.
        bound = recorded_salt_key(policy)  # an unusable record: refused, nothing changed
        index = _move(index, policy, user, new, limit, bound)
        if index.handle != slots.primary(user.uid, policy.nv_base):
            _move(index, policy, user, new, limit, bound)
    return {"limit": limit}


def _move(index, policy: Policy, user: User, pin: bytes, limit: int,
          salt_key_name: bytes | None):
    """Enrol `pin` at the user's other handle, record it (bound to `salt_key_name`),
    delete `index`: the record names a written index throughout. Returns the new index."""
    target = _other_slot(index, policy, user)
    target.remove_leftover()
    target.define(pin, limit, salted=policy.salted)
    write_record(policy, user, target.handle, salt_key_name)
    index.delete()
    return target


def delete(index, policy: Policy, caller: User, user: User, pin: bytes | None) -> dict:
    """Delete the PIN (a caller other than root proves it with `pin`) or a half-finished
    index (no PIN in it: its owner deletes it without one), what a killed change left
    at the other handle, and the record. The reply's field `what`: "PIN" or
    "half-finished PIN index"."""
    st = index.status()
    if not st.enrolled and not st.half_finished:
        enrolment.remove(policy.enrolment_dir, user.uid)  # a stale record, if any
        raise NotEnrolled(f"{user.name} has no PIN enrolled")
    if st.enrolled and users.delete_needs_pin(caller):
        if pin is None:
            raise InvalidPin("deleting your PIN needs the PIN")
        index.check(pin, salted=policy.salted)
    with _locked(policy):
        index.delete(only_half_finished=not st.enrolled and not caller.is_root)
        enrolment.remove(policy.enrolment_dir, user.uid)
        _remove_leftover(index, policy, user)
    return {"what": "half-finished PIN index" if st.half_finished else "PIN"}
