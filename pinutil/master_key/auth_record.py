"""The master key's authorisation record: the authValue of the key in the TPM, which
only root and the service (pinutild) can read.

Why: a master key with an empty authValue (pinpam's) gives every user's token to
anyone who can send the TPM commands (group `tss`, whoever /dev/tpmrm0 is opened to).
Every key pinutil creates gets a random 32-byte authValue instead, kept in this file;
raw TPM access alone then no longer derives a token (the TPM refuses the HMAC).

Where: the policy's `master_key_auth_file`, by default the file `master_key_auth` in
the service's state directory (`state_dir`: /var/lib/pinutild/master_key_auth by
default; the recovery file stays root's, /var/pinpam). Before the default followed
`state_dir` it was /var/lib/pinutild/master_key_auth whatever `state_dir` said:
`pinutil migrate-state` moves a record from there (`move_legacy`). Read strictly (pinutil
.securefile): a regular file, symlinks not followed, owned by root or by the account
pinutild, no permission bits for group or others, at most 4 KiB. Written atomically,
mode 0600; root writes it for the account pinutild when that account exists, so the
service can read what `pinutil` made without it.

Format (ASCII): a header line, then one line per key, its Name and its authValue in
lowercase hex:

    pinutil-master-key-auth 1
    000b<64 hex digits> <64 hex digits>

More than one line only while a key is being replaced: the new key's line is written
before the key is made persistent, the old key's line goes after (`-` for the empty
authValue of a key that had no record, pinpam's). A kill at any moment leaves a line
for whichever key the TPM holds (or no key: then the recovery file restores it). An entry is used only for the key whose Name it records: a record
that names another key gives an error, never a token from the wrong key.

A key with no record (no file) is used with an empty authValue: pinpam's keys, and
keys pinutil made before it had this record, keep working.
"""
from __future__ import annotations

import os

from pinutil import securefile
from pinutil.errors import MasterKeyError

HEADER = "pinutil-master-key-auth 1"
AUTH_SIZE = 32  # a SHA-256 object's authValue holds at most its digest size
NAME_SIZE = 34  # nameAlg (SHA-256) || digest
MAX_ENTRIES = 4
MAX_BYTES = 4096
_HEX = frozenset("0123456789abcdef")


def new_auth_value() -> bytes:
    """32 random bytes, the last one not zero: the TPM drops trailing zero bytes of an
    authValue, so a value ending in zero would not be the one we record."""
    while True:
        value = os.urandom(AUTH_SIZE)
        if value[-1]:
            return value


def _service_account() -> tuple[int, int] | None:
    import pwd  # here, like the name: off the token path's import budget

    from pinutil.users import SERVICE_USER

    try:
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def trusted_owners() -> tuple[int, ...]:
    """Root, and the service's account when it exists."""
    account = _service_account()
    return (0,) if account is None else (0, account[0])


def load(path: str) -> dict[bytes, bytes]:
    """{Name: authValue} of the record at `path`; {} when there is none;
    MasterKeyError when it is there but not trusted or not well-formed."""
    try:
        data = securefile.read_file(path, owners=trusted_owners(),
                                    forbidden=securefile.GROUP_OR_OTHERS_ANY,
                                    max_bytes=MAX_BYTES)
    except securefile.Refused as e:
        from pinutil.users import SERVICE_USER

        raise MasterKeyError(
            f"master key authorisation record {path} {e}: it must be a regular file of "
            f"root or {SERVICE_USER}, readable by its owner only") from None
    if data is None:
        return {}
    entries = _parse(data)
    if entries is None:
        raise MasterKeyError(f"master key authorisation record {path} is not well-formed "
                             "(no token is derived from a record that cannot be read)")
    return entries


def _parse(data: bytes) -> dict[bytes, bytes] | None:
    try:
        lines = data.decode("ascii").split("\n")
    except UnicodeDecodeError:
        return None
    if lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER or not 2 <= len(lines) <= MAX_ENTRIES + 1:
        return None
    entries = {}
    for line in lines[1:]:
        parts = line.split(" ")
        if len(parts) != 2 or len(parts[0]) != 2 * NAME_SIZE or not parts[0].startswith("000b"):
            return None
        name, auth = parts
        if auth == "-":
            auth = ""
        elif len(auth) != 2 * AUTH_SIZE:
            return None
        if not set(name + auth) <= _HEX:
            return None
        entries[bytes.fromhex(name)] = bytes.fromhex(auth)
    return entries


def save(path: str, entries: dict[bytes, bytes]) -> None:
    """Write the record atomically (mode 0600), or remove it when `entries` is empty.
    Root gives it (and a directory it creates) to the service's account."""
    if len(entries) > MAX_ENTRIES:
        raise ValueError("too many master key authorisation entries")
    directory, name = os.path.split(path)
    owner = _service_account() if os.geteuid() == 0 else None
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
        if owner is not None:
            os.chown(directory, *owner)
    dir_fd = os.open(directory, securefile.DIRECTORY_FLAGS)
    try:
        if not entries:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return
            os.fsync(dir_fd)
            return
        text = "".join(f"{n.hex()} {a.hex() or '-'}\n" for n, a in entries.items())
        securefile.replace_file(dir_fd, name, f"{HEADER}\n{text}".encode("ascii"), 0o600,
                                owner=owner)
    finally:
        os.close(dir_fd)


#: Where the record was by default before its default followed `state_dir`.
LEGACY_PATH = "/var/lib/pinutild/master_key_auth"


def move_legacy(new: str, report: dict, old: str = LEGACY_PATH) -> None:
    """Move the record from `old` to `new` (the policy's place) when `new` has none
    yet, for `pinutil migrate-state` (its `report`: "moved", "kept", "problems").
    Crash-safe by order, like pin/migrate.py: written to `new` first, then removed
    from `old`. A record already at `new` wins and the old one is left in place (it
    holds a key's authValue: nothing of it is thrown away); an old one that cannot be
    trusted is neither moved nor removed, and reported."""
    if os.path.realpath(old) == os.path.realpath(new) or not os.path.lexists(old):
        return
    try:
        entries = load(old)
        if load(new):
            report["kept"].append(f"{new} (the record there wins; {old} is left)")
            return
        save(new, entries)
    except (MasterKeyError, OSError) as e:
        report["problems"].append(f"{old}: not moved: {e}")
        return
    os.unlink(old)
    report["moved"].append(f"{old} -> {new}")
