"""Writing pam.d files safely, and the record that lets `pypam disable` undo it.

The record lives in /var/lib/pypam/enable/ (below `--root`), not in /etc/pam.d: it is
state, not configuration (FHS), it survives reboots and package upgrades, and nothing
that reads /etc/pam.d (libpam, pam-auth-update, authselect, dpkg's conffile prompts)
ever sees it. It holds `record.json` and `backup/`, a byte copy of each file as it was.

Order of an apply, so that a crash at any point leaves a state `disable` repairs:
1. the backups, then the record in state "pending" (each written atomically);
2. each pam.d file replaced atomically: a temporary file in the same directory with the
   original's owner and mode, fsync, rename over the file, fsync of the directory;
3. the record in state "applied".
Each recorded file is then either as it was (sha256 `before`) or as enable wrote it
(`after`): `disable` restores the second kind from the backup, leaves the first alone,
and refuses, changing nothing, while any file is neither (the admin edited it since).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

STATE_DIR = "/var/lib/pypam/enable"
RECORD = "record.json"
FORMAT = 1


class ApplyError(Exception):
    """Something on disk is not as the plan expects: nothing (more) was changed."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(real: str, data: bytes, uid: int, gid: int, mode: int) -> None:
    """Replace `real` by `data` (owner uid:gid, permission bits `mode`) so that a crash
    leaves either the old or the new file, never a mix."""
    directory = os.path.dirname(real) or "."
    tmp = os.path.join(directory, f".{os.path.basename(real)}.pypam-new")
    try:
        os.unlink(tmp)                  # left over from a crash
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchown(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _owner() -> tuple[int, int]:
    """Who owns the state files: root (the admin command), or the caller in tests."""
    return os.getuid(), os.getgid()


@dataclass
class FileRecord:
    path: str           # as libpam opens it (/etc/pam.d/sudo)
    backup: str         # file name in backup/
    before: str         # sha256 of the original bytes
    after: str          # sha256 of what enable wrote
    uid: int
    gid: int
    mode: int

    def as_json(self) -> dict:
        return dict(self.__dict__)


class State:
    """The state directory below a root."""

    def __init__(self, root: str = "/") -> None:
        self.dir = os.path.join(root, STATE_DIR.lstrip("/"))
        self.root = root

    def real(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    @property
    def record_path(self) -> str:
        return os.path.join(self.dir, RECORD)

    def load(self) -> dict | None:
        try:
            with open(self.record_path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def _save(self, record: dict) -> None:
        data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        atomic_write(self.record_path, data, *_owner(), 0o600)

    def _backup(self) -> str:
        return os.path.join(self.dir, "backup")

    def apply(self, changes: list[tuple[str, bytes, bytes]], services: list[str],
              command: list[str], kind: str = "direct",
              write: Callable[[], None] | None = None) -> dict:
        """Write each (path, expected current bytes, new bytes); see the module doc.
        `write`, if given, makes the change itself (pam-auth-update) instead of the
        atomic writes; the files must then hold exactly the new bytes."""
        if self.load() is not None:
            raise ApplyError(f"{self.record_path} exists: pypam enable already changed this "
                             "system; run `pypam disable --apply` first")
        files = []
        for n, (path, before, after) in enumerate(changes):
            if os.path.islink(self.real(path)):     # enable refuses these; never replace one
                raise ApplyError(f"{path} is a symbolic link: nothing written")
            st = os.stat(self.real(path))
            with open(self.real(path), "rb") as f:
                if f.read() != before:
                    raise ApplyError(f"{path} changed while enable ran: nothing written")
            files.append(FileRecord(path, f"{n}-{os.path.basename(path)}", sha256(before),
                                    sha256(after), st.st_uid, st.st_gid, st.st_mode & 0o7777))
        os.makedirs(self._backup(), mode=0o700, exist_ok=True)
        os.chmod(self.dir, 0o700)
        for record, (_, before, _) in zip(files, changes):
            atomic_write(os.path.join(self._backup(), record.backup), before,
                         *_owner(), 0o600)
        record = {"format": FORMAT, "state": "pending", "services": services, "kind": kind,
                  "command": command, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "files": [r.as_json() for r in files]}
        self._save(record)
        if write is None:
            for r, (_, _, after) in zip(files, changes):
                atomic_write(self.real(r.path), after, r.uid, r.gid, r.mode)
        else:
            write()
            wrong = [r.path for r, state in self.file_states(record)
                     if state != "as enable wrote it"]
            if wrong:
                raise ApplyError(f"{', '.join(wrong)}: not what the dry run showed after "
                                 "writing; run `pypam disable --apply` to undo")
        record["state"] = "applied"
        self._save(record)
        return record

    def file_states(self, record: dict) -> list[tuple[FileRecord, str]]:
        """Each recorded file with its state now: "as enable wrote it", "as before",
        "changed since" or "missing"."""
        out = []
        for entry in record["files"]:
            r = FileRecord(**entry)
            try:
                with open(self.real(r.path), "rb") as f:
                    now = sha256(f.read())
            except FileNotFoundError:
                out.append((r, "missing"))
                continue
            out.append((r, {r.after: "as enable wrote it", r.before: "as before"}.get(
                now, "changed since")))
        return out

    def backup_bytes(self, r: FileRecord) -> bytes:
        with open(os.path.join(self._backup(), r.backup), "rb") as f:
            data = f.read()
        if sha256(data) != r.before:
            raise ApplyError(f"the backup of {r.path} does not match its record: "
                             "not restored")
        return data

    def restore(self, record: dict, undo: Callable[[], None] | None = None) -> list[str]:
        """Put back every file enable wrote; refuse if any changed since. `undo`, if
        given, first undoes the change its own way (pam-auth-update --disable); any
        file still not as before is then restored from its backup. Returns the paths
        restored. The record goes to history/ when every file is as before."""
        states = self.file_states(record)
        bad = [(r, s) for r, s in states if s in ("changed since", "missing")]
        if bad:
            raise ApplyError("; ".join(
                f"{r.path} is missing" if s == "missing" else
                f"{r.path} was changed since pypam enable wrote it" for r, s in bad))
        restored = []
        if undo is not None:
            undo()
            restored = [r.path for r, s in states if s == "as enable wrote it"]
            states = self.file_states(record)
        for r, s in states:
            # After `undo`, anything not as before is put back from the backup.
            if s == "as enable wrote it" or (undo is not None and s != "as before"):
                atomic_write(self.real(r.path), self.backup_bytes(r), r.uid, r.gid, r.mode)
                restored.append(r.path)
        restored = list(dict.fromkeys(restored))
        history = os.path.join(self.dir, "history", time.strftime("%Y%m%dT%H%M%S"))
        os.makedirs(history, mode=0o700, exist_ok=True)
        shutil.move(self._backup(), os.path.join(history, "backup"))
        os.rename(self.record_path, os.path.join(history, RECORD))
        return restored
