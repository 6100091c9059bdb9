"""The one-time move of the state from where it was to the service's state directory.

Before the state directory (pin/state.py), the enrolment records were in
/var/lib/pinpam/enrolments (root:tss 0770) and the salt key record next to the policy
file (/etc/pinpam/salt_key). Logins now read only the state directory, so root moves
them: `pinutil migrate-state`, which the package's postinst and `make install` run.

Crash-safe by order: each file is first written in the new place (atomically: a
temporary file, fsync, rename, fsync of the directory), and only then removed from
the old one. Whatever the point at which the move is killed, each record is whole in
one place or both; running the move again finishes it. A file already in the new
place wins (only the new place is written since the upgrade: it is the newer one) and
its old copy is removed. An old file that cannot be trusted (wrong owner, writable by
others, unreadable, naming another uid) is neither moved nor removed, and is reported.

Then every record without a salt key line (written before records named the salt key
they were made under: enrolment.py) is bound to the Name recorded now, so that a later
TPM Clear and `pinutil salt-key record` void it like any newer record. Run again, it
binds nothing more.

Root only: it reads the old root:tss directory and writes the service's.
"""
from __future__ import annotations

import os

from pinutil import securefile
from pinutil.errors import PinutilError, TpmUnavailable
from pinutil.pin import enrolment, salt_key
from pinutil.pin.policy import Policy

LEGACY_ENROLMENT_DIR = "/var/lib/pinpam/enrolments"


def migrate(policy: Policy, policy_path: str,
            legacy_enrolment_dir: str = LEGACY_ENROLMENT_DIR) -> dict:
    """Move what is found in the old places, bind older records to the salt key;
    {"moved": [...], "kept": [...], "bound": [users], "problems": [...]} (paths and
    reasons, for the caller to print)."""
    report: dict = {"moved": [], "kept": [], "bound": [], "problems": []}
    _move_salt_key(salt_key.legacy_record_path(policy_path), policy.salt_key_record, report)
    if os.path.realpath(legacy_enrolment_dir) != os.path.realpath(policy.enrolment_dir):
        _move_records(legacy_enrolment_dir, policy.enrolment_dir, report)
    _bind_records(policy, report)
    return report


def _bind_records(policy: Policy, report: dict) -> None:
    """Records without a salt key line get the Name recorded now (none recorded: they
    stay as they are, accepted as before)."""
    try:
        name = salt_key.load_if_present(policy.salt_key_record)
        if name is not None:
            report["bound"] = enrolment.bind_unbound(policy.enrolment_dir, name)
    except PinutilError as e:
        report["problems"].append(f"enrolment records not bound to the salt key: {e}")


def _move_salt_key(old: str, new: str, report: dict) -> None:
    if os.path.realpath(old) == os.path.realpath(new) or not os.path.lexists(old):
        return
    try:
        data = securefile.read_file(old, owners=(0,), forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=salt_key.MAX_RECORD_BYTES)
        name = bytes.fromhex((data or b"").decode("ascii").strip())
    except (securefile.Refused, ValueError, UnicodeDecodeError) as e:
        report["problems"].append(f"{old}: not moved: {e}")
        return
    try:
        recorded = salt_key.load_if_present(new)
    except TpmUnavailable:
        recorded = None  # an unusable new record is replaced, as `salt-key record` does
    if recorded is None:
        salt_key.save(new, name)
        report["moved"].append(f"{old} -> {new}")
    elif recorded != name:
        report["kept"].append(f"{new} (a different Name than {old}, which is removed)")
    os.unlink(old)


def _legacy_records(legacy_dir: str) -> tuple[int | None, list[str]]:
    try:
        # As the records were trusted there: root's directory, closed to others.
        fd = securefile.open_directory(legacy_dir, owners=(0,), forbidden=securefile.OTHERS_ANY)
    except securefile.Refused as e:
        raise enrolment.RecordError(f"{legacy_dir} {e}: nothing moved") from None
    if fd is None:
        return None, []
    return fd, sorted(name for name in os.listdir(fd) if name.isdigit() and name.isascii())


def _move_records(legacy_dir: str, new_dir: str, report: dict) -> None:
    try:
        old_fd, names = _legacy_records(legacy_dir)
    except PinutilError as e:
        report["problems"].append(str(e))
        return
    if old_fd is None:
        return
    try:
        for name in names:
            _move_record(old_fd, legacy_dir, int(name), new_dir, report)
        _remove_if_empty(old_fd, legacy_dir)
    finally:
        os.close(old_fd)


def _move_record(old_fd: int, legacy_dir: str, uid: int, new_dir: str, report: dict) -> None:
    old = f"{legacy_dir}/{uid}"
    try:
        data = securefile.read_file(str(uid), owners=(0, uid),
                                    forbidden=securefile.GROUP_OR_OTHERS_WRITE,
                                    max_bytes=enrolment.MAX_RECORD_BYTES, dir_fd=old_fd)
        record = enrolment.parse(data or b"", old)
        if record.uid != uid:
            raise enrolment.RecordError(f"enrolment record {old} names uid {record.uid}")
    except (securefile.Refused, enrolment.RecordError) as e:
        report["problems"].append(f"{old}: not moved: {e}")
        return
    try:
        if enrolment.read(new_dir, uid) is None:
            enrolment.write(new_dir, record, as_root=True)
            report["moved"].append(f"{old} -> {new_dir}/{uid}")
        else:
            report["kept"].append(f"{new_dir}/{uid} (newer than {old}, which is removed)")
    except enrolment.RecordError as e:
        report["problems"].append(f"{old}: not moved: {e}")
        return
    os.unlink(str(uid), dir_fd=old_fd)


def _remove_if_empty(old_fd: int, legacy_dir: str) -> None:
    """The old directory once nothing is left in it, and then /var/lib/pinpam if that
    was its empty parent."""
    if os.listdir(old_fd):
        return
    parents = [os.path.dirname(legacy_dir)] if legacy_dir == LEGACY_ENROLMENT_DIR else []
    for path in (legacy_dir, *parents):
        try:
            os.rmdir(path)
        except OSError:
            return
