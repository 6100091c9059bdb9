"""Files pinutil trusts (policy, salt key record, enrolment records, recovery file):
read only after checks on the opened descriptor, written only by atomic replacement.

Reading never follows a symbolic link (O_NOFOLLOW), never blocks on a FIFO
(O_NONBLOCK), and checks type, owner, mode and size with fstat on the descriptor it
then reads, so nothing can be swapped between the check and the read. An absolute
path given without a directory descriptor (a policy's, a path a policy names) is
walked from `/`: each directory on the way opened O_NOFOLLOW relative to the one
before and checked before the next (`_walk`), so no symbolic link and no directory
someone else controls above the file decides which file is read (review 3's R4, the
rule pypam/loader.py applies to module directories). Writing goes to
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
# A directory on a walked path is only passed through: O_PATH needs search permission
# alone (as an open by path does), and fstat still works on the descriptor.
_PASS_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

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


def _open(path: str, flags: int, dir_fd: int | None,
          owners: tuple[int, ...] = ()) -> int | None:
    """os.open, None for a missing file, else `Refused`. An absolute path without
    `dir_fd` is walked first (`_walk`, trusting `owners` for the directories too)."""
    if dir_fd is not None or not path.startswith("/"):
        return _open_in(path, flags, dir_fd)
    walked = _walk(path, owners)
    if walked is None:
        return None
    parent_fd, name = walked
    try:
        return _open_in(name, flags, parent_fd)
    finally:
        os.close(parent_fd)


def _open_in(name: str, flags: int, dir_fd: int | None) -> int | None:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        # O_NOFOLLOW answers ELOOP for a symbolic link, ENOTDIR with O_DIRECTORY
        if e.errno == errno.ELOOP or (e.errno == errno.ENOTDIR and _is_link(name, dir_fd)):
            raise Refused("is a symbolic link (not followed)") from None
        raise Refused(f"cannot open: {e.strerror}", e.errno) from None


def _walk(path: str, owners: tuple[int, ...]) -> tuple[int, str] | None:
    """(a descriptor on the directory holding the last component of the absolute
    `path`, that component), None when a directory on the way does not exist.

    From `/`, each component is opened with O_NOFOLLOW relative to the one before and
    checked by fstat before the next is opened: no symbolic link anywhere (not
    resolved: a resolved path is checked after the fact, not opened), and every
    directory owned by root, the effective uid or one of the file's own `owners`
    (they choose its bytes anyway), not writable by group or others unless sticky
    (/tmp: others cannot rename what they do not own). Whoever could write one of
    them could put another file, or another tree, in the place named."""
    names = [n for n in path.split("/") if n]
    if not names or any(n in (".", "..") for n in names):
        raise Refused("is not a normalised absolute path (no '.' or '..')")
    trusted = (0, os.geteuid(), *owners)
    fd = os.open("/", _PASS_FLAGS)
    where = "/"
    try:
        for name in names[:-1]:
            _check_passed(os.fstat(fd), where, trusted)
            where = where.rstrip("/") + "/" + name
            try:
                child = os.open(name, _PASS_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                os.close(fd)
                return None
            except OSError as e:  # O_DIRECTORY on a link: ENOTDIR (or ELOOP)
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, fd):
                    raise Refused(f"is below a symbolic link: {where} is a symbolic "
                                  "link (not followed)") from None
                raise Refused(f"cannot open {where}: {e.strerror}", e.errno) from None
            os.close(fd)
            fd = child
        _check_passed(os.fstat(fd), where, trusted)
    except BaseException:
        os.close(fd)
        raise
    return fd, names[-1]


def _check_passed(st: os.stat_result, where: str, trusted: tuple[int, ...]) -> None:
    if st.st_uid not in trusted:
        raise Refused(f"is below an untrusted directory: {where} is owned by uid "
                      f"{st.st_uid}, not by {_owners_text(tuple(dict.fromkeys(trusted)))}")
    if st.st_mode & GROUP_OR_OTHERS_WRITE and not st.st_mode & stat.S_ISVTX:
        raise Refused(f"is below an untrusted directory: {where} is writable by group or "
                      f"others and not sticky (mode {stat.S_IMODE(st.st_mode):04o})")


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_directory(path: str, *, owners: tuple[int, ...], forbidden: int,
                   dir_fd: int | None = None) -> int | None:
    """A descriptor on the directory `path` (None if it does not exist), owned by one
    of `owners` and with none of the `forbidden` mode bits; else `Refused`. An
    absolute `path` without `dir_fd` is walked from / (module docstring)."""
    fd = _open(path, DIRECTORY_FLAGS, dir_fd, owners)
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
    `Refused`. An absolute `path` without `dir_fd` is walked from / (module
    docstring)."""
    fd = _open(path, READ_FLAGS, dir_fd, owners)
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
