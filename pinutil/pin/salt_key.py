"""The salt key record: the Name of the TPM's salt key, written by root, trusted at login.

Why: a salted PIN check is only as private as the key it salts with. Anything that can
alter TPM responses (a bus interposer, a process owning a TPM socket) could answer
"here is the salt key" with its own key, learn the session key, brute-force the typed
PIN offline from the command HMAC and forge a "PIN correct" answer. So the key's
Name (nameAlg || SHA-256 of its public area, what `tpm2_readpublic -c 0x81000082`
prints as `name`) is recorded once by root, and every salted check and salted
enrolment refuses a key with any other Name before a PIN-dependent byte is sent.

Where: the file `salt_key` in the policy file's directory (so `/etc/pinpam/salt_key`
next to `/etc/pinpam/policy`; a test policy in a temporary directory has its record
there). Format: one line, the Name in lowercase hex (68 characters for SHA-256).
Read strictly: a regular file (symlinks not followed), owned by root, not writable by
group or others, at most 4 KiB. Written by `pinutil salt-key record` or by root's
first `pinutil setup` (trust on first use: do it while nobody can alter the TPM's
answers, e.g. at installation).
"""
from __future__ import annotations

import errno
import os
import stat

from pinutil.errors import TpmUnavailable

RECORD_NAME = "salt_key"
MAX_RECORD_BYTES = 4096
RECORD_COMMAND = "pinutil salt-key record"
_HEX = frozenset("0123456789abcdef")


def record_path(policy_path: str) -> str:
    """The record that goes with the policy file at `policy_path`."""
    return os.path.join(os.path.dirname(policy_path) or ".", RECORD_NAME)


def missing_message(path: str) -> str:
    return (f"no salt key is recorded in {path}: a PIN cannot be checked safely; "
            f"root must run `{RECORD_COMMAND}` (or a first `pinutil setup`)")


def load(path: str) -> bytes:
    """The recorded Name; TpmUnavailable (fail closed) when missing or unusable."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise TpmUnavailable(missing_message(path)) from None
    except OSError as e:
        why = "is a symbolic link" if e.errno == errno.ELOOP else f"cannot open: {e.strerror}"
        raise TpmUnavailable(f"salt key record {path} {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 \
                or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_size > MAX_RECORD_BYTES:
            raise TpmUnavailable(f"salt key record {path} is not a root-owned regular file "
                                 f"writable only by root (at most {MAX_RECORD_BYTES} bytes)")
        data = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError as e:
        raise TpmUnavailable(f"salt key record {path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if len(text) != 68 or not set(text) <= _HEX or not text.startswith("000b"):
        raise TpmUnavailable(f"salt key record {path} does not hold a SHA-256 Name")
    return bytes.fromhex(text)


def load_if_present(path: str) -> bytes | None:
    """load(), but None when there is no record yet (for root's first setup)."""
    if not os.path.lexists(path):
        return None
    return load(path)


def save(path: str, name: bytes) -> None:
    """Write the record atomically, root-owned 0644 (the caller checked it is root)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    tmp = os.path.join(directory, f".{RECORD_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, name.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise
