"""The salt key record: the Name of the TPM's salt key, written by root, trusted at login.

Why: a salted PIN check is only as private as the key it salts with. Anything that can
alter TPM responses (a bus interposer, a process owning a TPM socket) could answer
"here is the salt key" with its own key, learn the session key, brute-force the typed
PIN offline from the command HMAC and forge a "PIN correct" answer. So the key's
Name (nameAlg || SHA-256 of its public area, what `tpm2_readpublic -c 0x81000082`
prints as `name`) is recorded once by root, and every salted check and salted
enrolment refuses a key with any other Name before a PIN-dependent byte is sent.

Where: `salt_key` in the service's state directory (the policy's `salt_key_record`,
/var/lib/pinutild/salt_key by default; pin/state.py). Before the state directory it
was next to the policy file (/etc/pinpam/salt_key): `pinutil migrate-state` moves it
(the package and `make install` run that). Format: one line, the Name in lowercase hex
(68 characters for SHA-256). Read strictly: a regular file (symlinks not followed) in
the checked state directory, owned by root or the service user, not writable by group
or others, at most 4 KiB. Written by `pinutil salt-key record` or by root's first
`pinutil setup` (trust on first use: do it while nobody can alter the TPM's answers,
e.g. at installation).
"""
from __future__ import annotations

import os

from pinutil import securefile
from pinutil.errors import TpmUnavailable
from pinutil.pin import state

RECORD_NAME = "salt_key"
MAX_RECORD_BYTES = 4096
_HEX = frozenset("0123456789abcdef")


def legacy_record_path(policy_path: str) -> str:
    """Where the record was before the state directory: next to the policy file."""
    return os.path.join(os.path.dirname(policy_path) or ".", RECORD_NAME)


def missing_message(path: str) -> str:
    # Imported here: the login path reads the record (enrolment.judge) without the TPM
    # binding that sapi loads.
    from pinutil.tpm.sapi import RECORD_COMMAND

    return (f"no salt key is recorded in {path}: a PIN cannot be checked safely; "
            f"root must run `{RECORD_COMMAND}` (or a first `pinutil setup`)")


def _read(path: str) -> bytes | None:
    state_dir, name = os.path.split(path)
    state_fd = state.open_state_dir(state_dir)
    if state_fd is None:
        return None
    try:
        return securefile.read_file(name, owners=state.trusted_owners(),
                                    forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=MAX_RECORD_BYTES, dir_fd=state_fd)
    finally:
        os.close(state_fd)


def load(path: str) -> bytes:
    """The recorded Name; TpmUnavailable (fail closed) when missing or unusable."""
    try:
        data = _read(path)
    except (securefile.Refused, state.StateError) as e:
        raise TpmUnavailable(f"salt key record {path} {e}: it must be a regular file "
                             f"owned by root or {state.SERVICE_USER}, writable only by "
                             f"its owner (at most {MAX_RECORD_BYTES} bytes)") from None
    if data is None:
        raise TpmUnavailable(missing_message(path))
    text = data.decode("ascii", "replace").strip()
    if len(text) != 68 or not set(text) <= _HEX or not text.startswith("000b"):
        raise TpmUnavailable(f"salt key record {path} does not hold a SHA-256 Name")
    return bytes.fromhex(text)


def trusted_name(path: str, read_tpm_name, trust_on_first_use: bool) -> tuple[bytes, bool]:
    """(the Name a salted check or enrolment may trust, whether it was recorded now).

    The record at `path`; TpmUnavailable without one, unless `trust_on_first_use`
    (root's `pinutil setup`): then the TPM's own answer, `read_tpm_name()` (bytes;
    no collections.abc import for its type: this module is on the login path), is
    believed and recorded. That is the one moment anything is taken on trust, so it
    belongs to root, before any PIN exists to protect."""
    if not trust_on_first_use:
        return load(path), False
    name = load_if_present(path)
    if name is not None:
        return name, False
    name = read_tpm_name()
    save(path, name)
    return name, True


def load_if_present(path: str) -> bytes | None:
    """load(), but None when there is no record yet (for root's first setup)."""
    if not os.path.lexists(path):
        return None
    return load(path)


def recorded_name_if_any(policy) -> bytes | None:
    """The Name recorded for `policy` (its `salt_key_record`), or None when there is no
    record (the master key's token, which has no PIN to protect, then salts with the
    TPM's own key: master_key/token.py); a record that is there but unusable still
    fails closed."""
    return load_if_present(policy.salt_key_record)


def save(path: str, name: bytes) -> None:
    """Write the record atomically, 0644 (the caller checked it is root), in the state
    directory (made if missing), owned by the directory's owner."""
    state_dir, record = os.path.split(path)
    try:
        state_fd = state.ensure_state_dir(state_dir)
    except state.StateError as e:
        raise TpmUnavailable(f"salt key record {path}: {e}") from None
    try:
        securefile.replace_file(state_fd, record, name.hex().encode() + b"\n", 0o644,
                                owner=state.owner_for_new_files(state_fd))
    finally:
        os.close(state_fd)
