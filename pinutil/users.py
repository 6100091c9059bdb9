"""Users, the caller, and who may do what.

The caller is always the REAL uid of the process (`os.getuid()`): `pinutil` runs
setgid `tss` (and a set-uid copy would run with euid 0), so neither the effective ids
nor anything from the environment (USER, LOGNAME, SUDO_UID, ...) says who asked.

Rules (pinpam's, each checked before any TPM command):

| action      | root (real uid 0) | any other caller                              |
|-------------|-------------------|-----------------------------------------------|
| setup       | any user          | only themselves, with their account password  |
| change      | any user, no PIN  | only themselves, with the old PIN             |
| delete      | any user, confirm | only themselves, with the PIN (none for a     |
|             |                   | half-finished index, which holds no PIN)      |
| test        | any user          | only themselves                               |
| status      | any user          | only themselves (failures are private)        |
| adopt       | any user          | never (it vouches for an index's owner)       |
| master-key  | yes               | never                                         |
| --policy    | yes               | never (the policy is not the caller's)        |

The account password is checked by the PAM service `pinutil` (`pinutil.pin.password_proof`):
a new PIN is a new way into the account, so whoever adds one proves they hold the
account (as `passwd` and Windows Hello do). `change` needs the old PIN instead: its
holder can already log in with it, and gains nothing by a new one.

`test` being self-only is what stops a setgid-tss caller from typing wrong PINs for
other users until every index is locked.

A root service that authenticates for someone else's client (polkit 127's
socket-activated agent helper, any local user's agent at the other end of its stdin)
says so: the rules then apply to that client (`acting_for`), never more than root.
"""
from __future__ import annotations

import os
import pwd

from pinutil.errors import PermissionDenied, UnknownUser
from pinutil.record import Record

ROOT_UID = 0
#: The system account pinutild runs as (systemd/pinutild.service): the one place that
#: names it (the service's client, its records, its proof process, the master key).
SERVICE_USER = "pinutild"
_MAX_NAME = 256


class User(Record):
    """A local account: its name and uid (the PIN index is `nv_base + uid`)."""

    __slots__ = _FIELDS = ("name", "uid")
    name: str
    uid: int

    @property
    def is_root(self) -> bool:
        return self.uid == ROOT_UID


def _shown(name: str) -> str:
    """A user-supplied name made safe for a one-line message."""
    return repr(name[:64] + ("..." if len(name) > 64 else ""))


def user_by_uid(uid: int) -> User:
    """The account with this uid, or `UnknownUser`."""
    try:
        entry = pwd.getpwuid(uid)
    except (KeyError, OverflowError):
        raise UnknownUser(f"no user with uid {uid}") from None
    return User(entry.pw_name, entry.pw_uid)


def account_named(name: str) -> User:
    """The account whose name is exactly `name` (no uid written out), or UnknownUser:
    what a PAM host's login names (PAM_USER)."""
    if not name or len(name) > _MAX_NAME or "\x00" in name:
        raise UnknownUser(f"no such user: {_shown(name)}")
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UnknownUser(f"no such user: {_shown(name)}") from None
    return User(entry.pw_name, entry.pw_uid)


def lookup_user(spec: str) -> User:
    """A user given by name, or by a decimal uid when no user has that name."""
    if not spec or len(spec) > _MAX_NAME or "\x00" in spec:
        raise UnknownUser(f"no such user: {_shown(spec)}")
    try:
        entry = pwd.getpwnam(spec)
    except KeyError:
        entry = None
    if entry is not None:
        return User(entry.pw_name, entry.pw_uid)
    if spec.isascii() and spec.isdigit() and len(spec) <= 10:
        return user_by_uid(int(spec))
    raise UnknownUser(f"no such user: {_shown(spec)}")


def current_caller() -> User:
    """Who is asking: the real uid of this process, never the environment."""
    uid = os.getuid()
    try:
        return user_by_uid(uid)
    except UnknownUser:
        raise UnknownUser(f"the calling uid {uid} has no user account") from None


def resolve_target(spec: str | None, caller: User) -> User:
    """The user a command acts on: `spec` if given, else the caller."""
    return caller if spec is None else lookup_user(spec)


#: uid_t's range; -1 (no account, pinutil.service.peer) is a uid nobody may act on.
_MAX_UID = 0xFFFFFFFE


def acting_for(caller: User, uid: int) -> User:
    """The caller the rules apply to when `caller` acts on behalf of `uid`: root may
    narrow itself to any uid (or to -1, no account at all), anyone else names only
    themselves. It can never widen what the caller may do."""
    if uid == caller.uid:
        return caller
    if not caller.is_root:
        raise PermissionDenied("only root may act on behalf of another uid")
    if not -1 <= uid <= _MAX_UID:
        raise PermissionDenied(f"on behalf of {uid}: not a uid")
    return User(f"uid {uid}", uid)


def _root_or_self(action: str, caller: User, target: User) -> None:
    if caller.is_root or caller.uid == target.uid:
        return
    raise PermissionDenied(f"only root may {action} the PIN of another user "
                           f"({target.name})")


def may_setup(caller: User, target: User) -> None:
    """Enrol: root, or the caller for themselves."""
    _root_or_self("set up", caller, target)


def may_change(caller: User, target: User) -> None:
    """Change: root, or the caller for themselves (see `change_needs_old_pin`)."""
    _root_or_self("change", caller, target)


def may_delete(caller: User, target: User) -> None:
    """Delete: root, or the caller for themselves (see `delete_needs_pin`)."""
    _root_or_self("delete", caller, target)


def may_test(caller: User, target: User) -> None:
    """Test (spends an attempt when wrong): root, or the caller for themselves."""
    _root_or_self("test", caller, target)


def may_status(caller: User, target: User) -> None:
    """Status: root for anyone, others for themselves."""
    _root_or_self("see the status of", caller, target)


def may_adopt(caller: User) -> None:
    """Adopt (write the enrolment record of an existing index): root only."""
    if not caller.is_root:
        raise PermissionDenied("only root may adopt a PIN index")


def setup_needs_password(caller: User) -> bool:
    """Enrolling your own PIN proves the account password; root enrols anyone."""
    return not caller.is_root


def may_manage_master_key(caller: User) -> None:
    """Every master-key command is root-only."""
    if not caller.is_root:
        raise PermissionDenied("only root may manage the master key")


def may_choose_policy(caller: User) -> None:
    """`--policy PATH` is honoured for root only: the policy decides the TPM, the
    index range and the lockout limit, which are not the caller's to choose."""
    if not caller.is_root:
        raise PermissionDenied("only root may use --policy")


def change_needs_old_pin(caller: User) -> bool:
    """Root may reset a forgotten PIN; everyone else proves they know the old one."""
    return not caller.is_root


def delete_needs_pin(caller: User) -> bool:
    """A user deleting their own PIN proves they know it (so a stolen session cannot
    silently remove the PIN); root is asked to confirm instead."""
    return not caller.is_root


def delete_needs_confirmation(caller: User) -> bool:
    """Root deletes without a PIN, so it is asked y/N (`--yes` skips)."""
    return caller.is_root
