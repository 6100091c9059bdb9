"""The service's state directory: what lives there, who may own it, how it is made.

The policy's `state_dir` (default /var/lib/pinutild, systemd's StateDirectory of
pinutild.service) is the one setting; the policy derives every path from it:

    <state_dir>/                  pinutild:pinutild 0700 (installed with the service)
    <state_dir>/salt_key          the salt key's Name (pin/salt_key.py)
    <state_dir>/enrolments/<uid>  the enrolment records (pin/enrolment.py)

Who writes: the service (as the user pinutild) when it enrols, root's `pinutil`
directly, and, on a system without the service, the set-gid-tss `pinutil` of the
fallback layout (root:tss: the state directory 0750, `enrolments` 0770).

Trust, checked on the opened descriptors (securefile), relative to the state
directory's descriptor so that nothing between the checks and the reads can move:
- the state directory: owned by root or by the service user, writable by no one else;
- `enrolments`: the same owners, and closed to others (no one outside the owner and
  its group may list who is enrolled);
- a file: owned by root or by the service user (an enrolment record also by the uid
  it names, which is what the fallback's set-gid writer leaves), writable by no one
  else. A file the service user owns but others may write is refused like root's.
The service user is the account `pinutild` (pinutil.users.SERVICE_USER) when it
exists: the same name the PAM side believes as the service.

Files root writes into a directory owned by the service user are given to that user
(and group), so the service can still read and replace them.

Only the stdlib is imported: the login path reads through here.
"""
from __future__ import annotations

import os

from pinutil import securefile
from pinutil.users import SERVICE_USER  # the account pinutild runs as

ENROLMENTS = "enrolments"
STATE_MODE = 0o700        # the service's layout, as StateDirectoryMode= says
FALLBACK_STATE_MODE = 0o750   # root:tss, for the set-gid fallback (no service)
FALLBACK_ENROLMENTS_MODE = 0o770


class StateError(Exception):
    """The state directory is missing parts root must make, or is untrustworthy: str()
    says why (callers turn it into their own domain error)."""


#: SERVICE_USER -> its (uid, gid) or None: looked up once per process. Every file a
#: login reads asks (five per request in the service), and where the account is missing
#: each lookup scanned the whole passwd database: most of a PIN check's own time. The
#: account is made when the service is installed, before it first runs; a process that
#: saw it missing keeps refusing what only it may own (fails closed) until it restarts.
_SERVICE_IDS: dict[str, tuple[int, int] | None] = {}


def service_ids() -> tuple[int, int] | None:
    """(uid, gid) of the service user, None when the account does not exist."""
    if SERVICE_USER not in _SERVICE_IDS:
        import pwd

        try:
            entry = pwd.getpwnam(SERVICE_USER)
            _SERVICE_IDS[SERVICE_USER] = entry.pw_uid, entry.pw_gid
        except KeyError:
            _SERVICE_IDS[SERVICE_USER] = None
    return _SERVICE_IDS[SERVICE_USER]


def trusted_owners(*also: int) -> tuple[int, ...]:
    """Root, the service user when it exists, and `also` (a record's own uid)."""
    ids = service_ids()
    return (0, *(() if ids is None else (ids[0],)), *also)


def open_state_dir(state_dir: str) -> int | None:
    """A descriptor on the checked state directory; None if it does not exist."""
    try:
        return securefile.open_directory(state_dir, owners=trusted_owners(),
                                         forbidden=securefile.GROUP_OR_OTHERS_WRITE)
    except securefile.Refused as e:
        raise StateError(f"state directory {state_dir} {e}: it must be owned by root "
                         f"or {SERVICE_USER} and writable by no one else") from None


def open_child_dir(state_fd: int, state_dir: str, name: str) -> int | None:
    """A descriptor on `name` inside the state directory, owned as the state directory
    may be and closed to others; None if it does not exist."""
    try:
        return securefile.open_directory(name, owners=trusted_owners(),
                                         forbidden=securefile.OTHERS_ANY, dir_fd=state_fd)
    except securefile.Refused as e:
        raise StateError(f"directory {state_dir}/{name} {e}: it must be owned by root or "
                         f"{SERVICE_USER} and closed to others") from None


def _tss_gid() -> int:
    import grp

    try:
        return grp.getgrnam("tss").gr_gid
    except KeyError:
        return 0


def _make_dir(name: str, uid: int, gid: int, mode: int, dir_fd: int | None) -> None:
    """mkdir, then owner and mode set on a descriptor of the directory just made, never
    by name: the parent may be the service account's, which could swap in a symlink
    between the mkdir and a chmod by name (root would then chmod its target). chown
    only as root: the service's unit refuses chown altogether (~@privileged), and a
    directory it makes is its own already. Any failure is a StateError, never a bare
    OSError."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return  # someone else made it first: it is checked when opened
    except OSError as e:
        raise StateError(f"cannot create {name}: {e.strerror}") from None
    try:
        fd = os.open(name, securefile.DIRECTORY_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        raise StateError(f"{name} was replaced while it was being made "
                         f"({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():  # not the one just made: someone else's
            raise StateError(f"{name} was replaced while it was being made "
                             f"(now owned by uid {st.st_uid})")
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    except OSError as e:
        raise StateError(f"cannot set the owner and mode of {name}: {e.strerror}") from None
    finally:
        os.close(fd)


def ensure_state_dir(state_dir: str) -> int:
    """(Root.) The state directory's descriptor, made if missing: the service's layout
    when its account exists, else the fallback's (root:tss 0750)."""
    fd = open_state_dir(state_dir)
    if fd is not None:
        return fd
    try:
        os.makedirs(os.path.dirname(state_dir.rstrip("/")) or "/", mode=0o755, exist_ok=True)
    except OSError as e:
        raise StateError(f"cannot create the parents of {state_dir}: {e.strerror}") from None
    ids = service_ids()
    if ids is None:
        _make_dir(state_dir.rstrip("/"), 0, _tss_gid(), FALLBACK_STATE_MODE, None)
    else:
        _make_dir(state_dir.rstrip("/"), *ids, STATE_MODE, None)
    fd = open_state_dir(state_dir)
    if fd is None:
        raise StateError(f"cannot create the state directory {state_dir}")
    return fd


def ensure_child_dir(state_fd: int, state_dir: str, name: str) -> int:
    """(Root, or the state directory's owner.) `name` inside the state directory, made
    if missing with the layout of the state directory's owner: the service's (its user, 0700) or the fallback's
    (root:tss 0770, so that the set-gid `pinutil` can write there)."""
    fd = open_child_dir(state_fd, state_dir, name)
    if fd is not None:
        return fd
    st = os.fstat(state_fd)
    if st.st_uid == 0:
        _make_dir(name, 0, _tss_gid(), FALLBACK_ENROLMENTS_MODE, state_fd)
    else:
        _make_dir(name, st.st_uid, st.st_gid, STATE_MODE, state_fd)
    fd = open_child_dir(state_fd, state_dir, name)
    if fd is None:
        raise StateError(f"cannot create {state_dir}/{name}")
    return fd


def owner_for_new_files(dir_fd: int) -> tuple[int, int] | None:
    """What root gives a file it writes in `dir_fd`: the directory's owner and group
    (the service must read and replace what root wrote). None when not root: the file
    then belongs to whoever writes it."""
    if os.geteuid() != 0:
        return None
    st = os.fstat(dir_fd)
    return st.st_uid, st.st_gid
