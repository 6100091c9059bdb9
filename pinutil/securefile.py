"""Files pinutil trusts (policy, salt key record, enrolment records, recovery file):
read only after checks on the opened descriptor, written only by atomic replacement.

Reading never follows a symbolic link (O_NOFOLLOW), never blocks on a FIFO
(O_NONBLOCK), and checks type, owner, mode and size with fstat on the descriptor it
then reads, so nothing can be swapped between the check and the read. Writing goes to
a temporary file in the same directory, fsync'd and renamed over the old one, then the
directory is fsync'd: a crash leaves the old file or the new one, never a torn one.

Callers say which owners and mode bits they accept and turn `Refused` into their own
domain error, prefixed with what the file is.
"""
from __future__ import annotations

import errno
import os
import stat

READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# The mode bits a trusted file or directory must not have.
GROUP_OR_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
OTHERS_ANY = stat.S_IRWXO
GROUP_OR_OTHERS_ANY = stat.S_IRWXG | stat.S_IRWXO
# A secret (the owner password file): nothing for others, no write for the group.
SECRET_FORBIDDEN = OTHERS_ANY | stat.S_IWGRP
_FORBIDDEN_TEXT = {
    GROUP_OR_OTHERS_WRITE: "writable by group or others",
    OTHERS_ANY: "open to others (read, write or search)",
    GROUP_OR_OTHERS_ANY: "open to group or others (read, write or search)",
    SECRET_FORBIDDEN: "open to others or writable by its group",
}


class Refused(Exception):
    """A file or directory that must not be trusted; str() says why, without the path.
    `errno`: the open() error behind "cannot open" (EACCES: this process may not read
    it), else 0."""

    def __init__(self, reason: str, error_number: int = 0) -> None:
        super().__init__(reason)
        self.errno = error_number


def _owners_text(owners: tuple[int, ...]) -> str:
    return " or ".join("root (uid 0)" if uid == 0 else f"uid {uid}" for uid in owners)


def _check(st: os.stat_result, owners: tuple[int, ...], forbidden: int,
           groups: tuple[int, ...] | None = None) -> None:
    if st.st_uid not in owners:
        raise Refused(f"is owned by uid {st.st_uid}, must be owned by {_owners_text(owners)}")
    if st.st_mode & forbidden:
        raise Refused(f"is {_FORBIDDEN_TEXT[forbidden]} (mode {stat.S_IMODE(st.st_mode):04o})")
    if groups is not None and st.st_mode & stat.S_IRWXG and st.st_gid not in groups:
        raise Refused(f"is open to its group, gid {st.st_gid} (mode "
                      f"{stat.S_IMODE(st.st_mode):04o}), which may not read it: only gid "
                      + " or ".join(str(g) for g in groups) + " may")


def _open(path: str, flags: int, dir_fd: int | None) -> int | None:
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symbolic link
            raise Refused("is a symbolic link (not followed)") from None
        raise Refused(f"cannot open: {e.strerror}", e.errno) from None


def open_directory(path: str, *, owners: tuple[int, ...], forbidden: int,
                   dir_fd: int | None = None) -> int | None:
    """A descriptor on the directory `path` (None if it does not exist), owned by one
    of `owners` and with none of the `forbidden` mode bits; else `Refused`."""
    fd = _open(path, DIRECTORY_FLAGS, dir_fd)
    if fd is None:
        return None
    try:
        _check(os.fstat(fd), owners, forbidden)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: str, *, owners: tuple[int, ...], forbidden: int, max_bytes: int,
              dir_fd: int | None = None, groups: tuple[int, ...] | None = None) -> bytes | None:
    """The bytes of the regular file `path` (None if it does not exist), owned by one
    of `owners`, with none of the `forbidden` mode bits, at most `max_bytes` long, and
    when `groups` is given, open to its group only if that is one of `groups`; else
    `Refused`."""
    fd = _open(path, READ_FLAGS, dir_fd)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("is not a regular file")
        _check(st, owners, forbidden, groups)
        chunks, total = [], 0
        while total <= max_bytes:  # st_size may be stale: the limit is on what is read
            chunk = os.read(fd, max_bytes + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise Refused(f"is larger than {max_bytes} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise Refused(f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def replace_file(dir_fd: int, name: str, data: bytes, mode: int,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace `name` in the open directory `dir_fd` by `data` with exactly `mode`
    (whatever the umask) and, if given, `owner` (uid, gid; root only): temporary file,
    fsync, rename, fsync of the directory. A symbolic link at `name` is replaced, never
    followed. OSError on failure, with the temporary file removed."""
    temporary = f".{name}.{os.urandom(8).hex()}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)  # the rename itself must survive a crash
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except OSError:
            pass
        raise
