"""The owner password file: the TPM owner and lockout hierarchies' passwords, which
`pinutil owner protect` sets and every owner-hierarchy command of the core then uses.

Why: with the TPM's factory state (empty owner password) any process that may open the
TPM (the `tss` group) can NV_UndefineSpace a user's PIN index and define its own PIN
at the same handle, and with an empty lockout password it can TPM2_Clear the whole
owner hierarchy. With both protected only the holders of this file (root and the
service, pinutild) can; the TPM refuses everyone else.

Where: the policy's `owner_auth_file` (default /etc/pinpam/owner-auth) holds the owner
password, the only one the service needs (NV define/undefine, OWNERREAD,
EvictControl); `FILE.lockout` holds the lockout password, root's alone (0600
root:root): with it TPM2_Clear wipes every key of the owner hierarchy, other
programs' too, and DA protection can be retuned, so a compromised pinutild must not
hold it. Format: text, the line `owner HEX` (FILE) or `lockout HEX` (FILE.lockout), 32
random bytes each, lowercase hex; `#` comment lines. A FILE written before (both
lines in it, the lockout's open to the service's group) still works; `pinutil owner
protect` moves its lockout line into FILE.lockout. Read strictly (securefile): a
regular file (symlinks not followed), owned by root, nothing for others, not
group-writable, FILE open to its group only when that is root's group or the
service's (`pinutild`), FILE.lockout to root's group only, at most 4 KiB.

The pending file (`PATH.new`, 0600 root:root, both lines) holds the passwords `pinutil
owner protect` is about to set: written (atomically) before the TPM changes; once both
hierarchies have them, FILE.lockout and then FILE are written from it and it is
removed last (cli/owner.py), so a kill at any point leaves every password the TPM may
hold in PATH.new or in FILE and FILE.lockout.
"""
from __future__ import annotations

import errno
import os

from pinutil import securefile
from pinutil.errors import TpmUnavailable
from pinutil.record import Record

DEFAULT_PATH = "/etc/pinpam/owner-auth"
PENDING_SUFFIX = ".new"
LOCKOUT_SUFFIX = ".lockout"  # root's alone: never the service's group
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


def lockout_path(path: str) -> str:
    return path + LOCKOUT_SUFFIX


#: SERVICE_GROUP -> readable_groups(): looked up once per process, as the service
#: user is (pinutil/pin/state.py `service_ids`): the service reads the file per request.
_READABLE_GROUPS: dict[str, tuple[int, ...]] = {}


def readable_groups() -> tuple[int, ...]:
    """The groups that may read the file: root's, and the service's if it exists."""
    if SERVICE_GROUP not in _READABLE_GROUPS:
        import grp

        try:
            _READABLE_GROUPS[SERVICE_GROUP] = (0, grp.getgrnam(SERVICE_GROUP).gr_gid)
        except KeyError:
            _READABLE_GROUPS[SERVICE_GROUP] = (0,)
    return _READABLE_GROUPS[SERVICE_GROUP]


def _read(path: str, groups: tuple[int, ...]) -> bytes | None:
    """The checked bytes of `path`, None if there is no file; TpmUnavailable (naming
    the file and why) if it cannot be used."""
    try:
        return securefile.read_file(path, owners=(0,), groups=groups,
                                    forbidden=securefile.SECRET_FORBIDDEN,
                                    max_bytes=MAX_FILE_BYTES)
    except securefile.Refused as e:
        if e.errno == errno.EACCES:  # the file exists, but is not for this process
            raise OwnerAuthWithheld(
                f"the TPM owner hierarchy is protected and this process may not read its "
                f"password ({path}): PIN enrolment and PIN login need pinutild "
                "(backend=daemon) or root") from None
        rule = ("0600 root:root" if groups == (0,) else
                f"mode 0600, or 0640 with group root or {SERVICE_GROUP}")
        raise TpmUnavailable(
            f"owner password file {path} {e}: it must be a root-owned regular file, "
            f"{rule}; refusing to use it") from None


def _fields(path: str) -> dict[str, bytes] | None:
    """FILE's passwords: `owner`, and `lockout` too in a file written before
    FILE.lockout existed; None if there is no file."""
    data = _read(path, readable_groups())
    return None if data is None else _parse(data, path, NAMES, ("owner",))


def load_owner(path: str) -> bytes | None:
    """The owner password alone (what the service and owner commands use), None if
    there is no file."""
    found = _fields(path)
    return None if found is None else found["owner"]


def load(path: str) -> OwnerPasswords | None:
    """(Root.) Both passwords: the owner's from `path`, the lockout's from the same file
    when it still has it (the layout before) or else from `lockout_path(path)`; None if
    there is no `path`."""
    found = _fields(path)
    if found is None:
        return None
    if "lockout" not in found:
        lockout_file = lockout_path(path)
        data = _read(lockout_file, (0,))
        if data is None:
            raise TpmUnavailable(f"owner password file {path} has no lockout line and "
                                 f"{lockout_file} does not exist; refusing to use it")
        found.update(_parse(data, lockout_file, ("lockout",), ("lockout",)))
    return OwnerPasswords(**found)


def holds_lockout(path: str) -> bool:
    """Whether `path` itself has the lockout line (written before FILE.lockout)."""
    found = _fields(path)
    return found is not None and "lockout" in found


def owner_password(path: str) -> bytes:
    """What owner-hierarchy commands authorise with (see the module docstring)."""
    owner = load_owner(path)
    return b"" if owner is None else owner


def loader(path: str):
    """For Tpm(owner_auth=...): the file is read at the first owner-hierarchy command."""
    return lambda: owner_password(path)


def _parse(data: bytes, path: str, allowed: tuple[str, ...],
           required: tuple[str, ...]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = "\0"
    expected = " and ".join(f"`{n} HEX`" for n in required)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if (name not in allowed or name in found or len(value) != 2 * PASSWORD_BYTES
                or not set(value) <= _HEX):
            raise TpmUnavailable(f"owner password file {path} is malformed (expected "
                                 f"{expected}); refusing to use it")
        found[name] = bytes.fromhex(value)
    missing = [n for n in required if n not in found]
    if missing:
        raise TpmUnavailable(f"owner password file {path} lacks {' and '.join(missing)}; "
                             "refusing to use it")
    return found


def _text(passwords: OwnerPasswords, names: tuple[str, ...]) -> bytes:
    return ("# TPM hierarchy passwords set by `pinutil owner protect`: keep them. Without\n"
            "# them nobody can change or delete a PIN index until the TPM is cleared.\n"
            + "".join(f"{name} {getattr(passwords, name).hex()}\n" for name in names)).encode()


def _write(path: str, text: bytes, for_service: bool) -> None:
    """Replace `path` atomically: 0640 root:pinutild when `for_service` and that group
    exists, else 0600 root:root."""
    groups = readable_groups()
    gid, mode = (groups[1], 0o640) if for_service and len(groups) > 1 else (0, 0o600)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    dir_fd = os.open(directory, securefile.DIRECTORY_FLAGS)
    try:
        securefile.replace_file(dir_fd, os.path.basename(path), text, mode, owner=(0, gid))
    finally:
        os.close(dir_fd)


def save(path: str, passwords: OwnerPasswords) -> None:
    """FILE.lockout (root's), then FILE with the owner line alone (the service's)."""
    _write(lockout_path(path), _text(passwords, ("lockout",)), for_service=False)
    _write(path, _text(passwords, ("owner",)), for_service=True)


def grant_service_group(path: str) -> bool:
    """Give an existing FILE (already read and checked by `load`, with no lockout line:
    `holds_lockout`) to the service's group,
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
    """Write PATH.new atomically (root, 0600 root:root: it has the lockout line too)."""
    _write(pending_path(path), _text(passwords, NAMES), for_service=False)


def commit_pending(path: str) -> None:
    """The pending passwords become the ones every reader uses: FILE.lockout and FILE
    written from PATH.new (`save`), then PATH.new removed and the directory synced."""
    passwords = load(pending_path(path))
    if passwords is None:
        raise TpmUnavailable(f"{pending_path(path)} vanished before it was committed")
    save(path, passwords)
    _unlink(pending_path(path))


def _unlink(path: str) -> None:
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


def remove(path: str) -> None:
    """Delete PATH, then PATH.lockout (after the TPM's hierarchies are back to empty
    passwords; a lockout file left by a kill is replaced by the next protect)."""
    _unlink(path)
    _unlink(lockout_path(path))
