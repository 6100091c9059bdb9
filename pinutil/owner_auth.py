"""The owner password file: the TPM owner and lockout hierarchies' passwords, which
`pinutil owner protect` sets and every owner-hierarchy command of the core then uses.

Why: with the TPM's factory state (empty owner password) any process that may open the
TPM (the `tss` group) can NV_UndefineSpace a user's PIN index and define its own PIN
at the same handle, and with an empty lockout password it can TPM2_Clear the whole
owner hierarchy. With both protected only the holders of this file (root and the
service, pinutild) can; the TPM refuses everyone else.

Where: the policy's `owner_auth_file` (default /etc/pinpam/owner-auth).
Format: text, two lines `owner HEX` and `lockout HEX` (32 random bytes each, lowercase
hex); `#` comment lines. Read strictly (securefile): a regular file (symlinks not
followed), owned by root, nothing for others, not group-writable, open to its group
only when that is root's group or the service's (`pinutild`), at most 4 KiB.

What a reader gets (`owner_password`):
- no file: b"", the factory state (what pinutil did before this file existed);
- a file this process may not open (EACCES: a user's set-gid helper, a host that is
  not root): TpmUnavailable before any owner command is sent: a PIN login then needs
  pinutild or a root host (README, "Owner hierarchy");
- a file that breaks the rules above or does not parse: TpmUnavailable naming the
  file and the rule; nothing is sent to the TPM with a guessed password.

The pending file (`PATH.new`) holds the passwords `pinutil owner protect` is about to
set: written (atomically) before the TPM changes, renamed over PATH once both
hierarchies have them (cli/owner.py), so a kill at any point leaves every password
the TPM may hold in one of the two files.
"""
from __future__ import annotations

import errno
import os

from pinutil import securefile
from pinutil.errors import TpmUnavailable
from pinutil.record import Record

DEFAULT_PATH = "/etc/pinpam/owner-auth"
PENDING_SUFFIX = ".new"
SERVICE_GROUP = "pinutild"  # the group of the service's user (systemd/pinutild.service)
PASSWORD_BYTES = 32  # a SHA-256 digest's size: what every TPM accepts for a hierarchy
MAX_FILE_BYTES = 4096
NAMES = ("owner", "lockout")
_HEX = frozenset("0123456789abcdef")


class OwnerAuthWithheld(TpmUnavailable):
    """The file exists but this process may not read it (travels as TpmUnavailable)."""


class OwnerPasswords(Record):
    """The two hierarchies' passwords (bytes)."""

    __slots__ = _FIELDS = NAMES
    owner: bytes
    lockout: bytes

    def __repr__(self) -> str:  # never a password in a log or a traceback
        return "OwnerPasswords(...)"


def new_passwords() -> OwnerPasswords:
    import secrets

    return OwnerPasswords(*(secrets.token_bytes(PASSWORD_BYTES) for _ in NAMES))


def pending_path(path: str) -> str:
    return path + PENDING_SUFFIX


def readable_groups() -> tuple[int, ...]:
    """The groups that may read the file: root's, and the service's if it exists."""
    import grp

    try:
        return (0, grp.getgrnam(SERVICE_GROUP).gr_gid)
    except KeyError:
        return (0,)


def load(path: str) -> OwnerPasswords | None:
    """The passwords in `path`, None if there is no file; TpmUnavailable (naming the
    file and why) if it cannot be used."""
    try:
        data = securefile.read_file(path, owners=(0,), groups=readable_groups(),
                                    forbidden=securefile.SECRET_FORBIDDEN,
                                    max_bytes=MAX_FILE_BYTES)
    except securefile.Refused as e:
        if e.errno == errno.EACCES:  # the file exists, but is not for this process
            raise OwnerAuthWithheld(
                f"the TPM owner hierarchy is protected and this process may not read its "
                f"password ({path}): PIN enrolment and PIN login need pinutild "
                "(backend=daemon) or root") from None
        raise TpmUnavailable(
            f"owner password file {path} {e}: it must be a root-owned regular file, mode "
            f"0600, or 0640 with group root or {SERVICE_GROUP}; refusing to use it") from None
    if data is None:
        return None
    return _parse(data, path)


def owner_password(path: str) -> bytes:
    """What owner-hierarchy commands authorise with (see the module docstring)."""
    passwords = load(path)
    return b"" if passwords is None else passwords.owner


def loader(path: str):
    """For Tpm(owner_auth=...): the file is read at the first owner-hierarchy command."""
    return lambda: owner_password(path)


def _parse(data: bytes, path: str) -> OwnerPasswords:
    found: dict[str, bytes] = {}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = "\0"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if (name not in NAMES or name in found or len(value) != 2 * PASSWORD_BYTES
                or not set(value) <= _HEX):
            raise TpmUnavailable(f"owner password file {path} is malformed (expected the "
                                 "lines `owner HEX` and `lockout HEX`); refusing to use it")
        found[name] = bytes.fromhex(value)
    if set(found) != set(NAMES):
        raise TpmUnavailable(f"owner password file {path} lacks "
                             f"{' and '.join(n for n in NAMES if n not in found)}; "
                             "refusing to use it")
    return OwnerPasswords(**found)


def _text(passwords: OwnerPasswords) -> bytes:
    return ("# TPM hierarchy passwords set by `pinutil owner protect`: keep them. Without\n"
            "# them nobody can change or delete a PIN index until the TPM is cleared.\n"
            + "".join(f"{name} {getattr(passwords, name).hex()}\n" for name in NAMES)).encode()


def _write(directory: str, name: str, passwords: OwnerPasswords) -> None:
    groups = readable_groups()
    gid, mode = (groups[1], 0o640) if len(groups) > 1 else (0, 0o600)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    dir_fd = os.open(directory, securefile.DIRECTORY_FLAGS)
    try:
        securefile.replace_file(dir_fd, name, _text(passwords), mode, owner=(0, gid))
    finally:
        os.close(dir_fd)


def grant_service_group(path: str) -> bool:
    """Give an existing FILE (already read and checked by `load`) to the service's group,
    0640 root:pinutild, when that group exists and the file is not so yet (a protect run
    before the service was installed wrote it 0600 root:root, which pinutild cannot
    read); True if it changed. By file descriptor, no symbolic link followed."""
    groups = readable_groups()
    if len(groups) < 2:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if (st.st_gid, st.st_mode & 0o7777) == (groups[1], 0o640):
            return False
        os.fchown(fd, 0, groups[1])
        os.fchmod(fd, 0o640)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def write_pending(path: str, passwords: OwnerPasswords) -> None:
    """Write PATH.new atomically (root, 0640 root:pinutild, or 0600 without that group)."""
    _write(os.path.dirname(path) or ".", os.path.basename(pending_path(path)), passwords)


def commit_pending(path: str) -> None:
    """Rename PATH.new over PATH, then fsync the directory: the pending passwords are now
    the ones every reader uses."""
    directory = os.path.dirname(path) or "."
    dir_fd = os.open(directory, securefile.DIRECTORY_FLAGS)
    try:
        os.rename(os.path.basename(pending_path(path)), os.path.basename(path),
                  src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove(path: str) -> None:
    """Delete PATH (after the TPM's hierarchies are back to empty passwords)."""
    directory = os.path.dirname(path) or "."
    dir_fd = os.open(directory, securefile.DIRECTORY_FLAGS)
    try:
        try:
            os.unlink(os.path.basename(path), dir_fd=dir_fd)
        except FileNotFoundError:
            return
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
