"""Find, vet and load a pypam module file.

A module runs with the host's privileges (often root), so its file must be as
trustworthy as the pam.d line that names it: a regular file, owned by root or by the
effective uid, writable by no one else, in a directory (and ancestors) nobody else can
write to, reached from `/` without following any symlink. The file is opened once, by descriptor relative to the vetted directory, and
the code compiled from that same descriptor, so a swap between check and use is moot.

Bytecode: compiling a module costs a cold login ~1 ms per 100 lines, so a
`__pycache__/NAME.TAG.pyc` beside the module is used when it passes the same trust
checks as the module (directory and file, opened by descriptor) and is a
*checked-hash* pyc (PEP 552) whose hash matches the source just read: the source
always decides. `make build` and `make install` write them; anything else (no pyc,
a timestamp pyc, a stale or untrusted one) means compiling the source, as before.
The embedded interpreter never writes bytecode itself.
"""
from __future__ import annotations

import _imp
import errno
import marshal
import os
import stat
import sys
import types

# The running import system's own magic number (importlib.util would cost 2.4 ms).
from _frozen_importlib_external import MAGIC_NUMBER

MAX_NAME_LENGTH = 64
MAX_MODULE_BYTES = 1 << 20
MAX_BYTECODE_BYTES = 4 << 20
_PYC_CHECKED_HASH = 0b11  # PEP 552 flags: hash-based, checked against the source
_SOURCE_HASH_KEY = int.from_bytes(MAGIC_NUMBER, "little")


class ModuleLoadError(Exception):
    """The module cannot be used; the message says why (for syslog)."""


_cache: dict[str, tuple[tuple, types.ModuleType]] = {}


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _open_directory_walk(directory: str) -> int:
    """Open `directory` by walking it from `/`, one component at a time, each opened
    with O_NOFOLLOW relative to the previous one and checked by fstat before the next.

    Symlinks anywhere in the path are refused (not resolved: a user-made link under
    /tmp could otherwise pick which root-owned directory is used, and a resolved path
    is checked after the fact, not opened). Every ancestor must be owned by root/euid
    and not writable by others (a sticky directory such as /tmp is fine: others cannot
    rename what they do not own); the directory itself must pass `_check_entry`.
    Returns the open directory fd.
    """
    if not directory.startswith("/"):
        raise ModuleLoadError(f"module directory {directory!r} is not absolute")
    names = [n for n in directory.split("/") if n]
    if any(n in (".", "..") for n in names):
        raise ModuleLoadError(f"module directory {directory!r} is not normalised")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    path = "/"
    try:
        for name in names:
            _check_ancestor(os.fstat(fd), path)
            path = os.path.join(path, name)
            try:
                child = os.open(name, flags, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_symlink(name, fd):
                    raise ModuleLoadError(
                        f"module directory {directory}: {path} is a symbolic link") from None
                raise ModuleLoadError(f"cannot open module directory {path}: {e.strerror}") from None
            os.close(fd)
            fd = child
        _check_entry(os.fstat(fd), path, "directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_ancestor(st: os.stat_result, path: str) -> None:
    sticky = st.st_mode & stat.S_ISVTX
    if not _trusted_owner(st) or (st.st_mode & 0o022 and not sticky):
        raise ModuleLoadError(f"untrusted directory {path} (owner or mode)")


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _check_entry(st: os.stat_result, path: str, kind: str) -> None:
    right_type = stat.S_ISDIR(st.st_mode) if kind == "directory" else stat.S_ISREG(st.st_mode)
    if not right_type:
        raise ModuleLoadError(f"{path} is not a regular {kind}")
    if not _trusted_owner(st):
        raise ModuleLoadError(f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        raise ModuleLoadError(f"{path} is group- or world-writable")


def _open_vetted(dir_fd: int, entry: str, path: str, kind: str) -> int:
    """Open `entry` under `dir_fd` without following links; check type, owner and mode."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_DIRECTORY if kind == "directory" else os.O_NONBLOCK
    try:
        fd = os.open(entry, flags, dir_fd=dir_fd)
    except OSError as e:
        raise ModuleLoadError(f"cannot open {path}: {e.strerror}") from None
    try:
        _check_entry(os.fstat(fd), path, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, limit: int) -> bytes:
    with os.fdopen(fd, "rb", closefd=False) as f:
        return f.read(limit + 1)


def _read_bytecode(dfd: int, directory: str, name: str) -> bytes | None:
    """The vetted __pycache__/NAME.TAG.pyc, or None if absent or not trusted."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    cache = os.path.join(directory, "__pycache__")
    try:
        cfd = _open_vetted(dfd, "__pycache__", cache, "directory")
    except ModuleLoadError:
        return None
    try:
        pyc = f"{name}.{tag}.pyc"
        fd = _open_vetted(cfd, pyc, os.path.join(cache, pyc), "file")
    except ModuleLoadError:
        return None
    finally:
        os.close(cfd)
    try:
        return _read_fd(fd, MAX_BYTECODE_BYTES)
    finally:
        os.close(fd)


def _code_from_bytecode(data: bytes | None, source: bytes) -> types.CodeType | None:
    """The code in a checked-hash pyc made from exactly `source`, else None."""
    if data is None or len(data) < 16 or len(data) > MAX_BYTECODE_BYTES:
        return None
    if data[:4] != MAGIC_NUMBER or int.from_bytes(data[4:8], "little") != _PYC_CHECKED_HASH:
        return None
    if data[8:16] != _imp.source_hash(_SOURCE_HASH_KEY, source):
        return None
    try:
        code = marshal.loads(memoryview(data)[16:])
    except Exception:  # noqa: BLE001 - corrupt data also raises SystemError, OverflowError,
        return None    # RecursionError (found by tests/fuzz): compile the source instead
    return code if isinstance(code, types.CodeType) else None


def _read_vetted(name: str, directory: str) -> tuple[str, tuple, bytes | None, bytes | None]:
    """Return (path, identity, source, bytecode); source is None when the cache is current."""
    directory = directory.rstrip("/") or "/"
    dfd = _open_directory_walk(directory)
    try:
        path = os.path.join(directory, name + ".py")
        fd = _open_vetted(dfd, name + ".py", path, "file")
        try:
            st = os.fstat(fd)
            if st.st_size > MAX_MODULE_BYTES:
                raise ModuleLoadError(f"{path} is larger than {MAX_MODULE_BYTES} bytes")
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = _cache.get(path)
            if cached is not None and cached[0] == identity:
                return path, identity, None, None
            source = _read_fd(fd, MAX_MODULE_BYTES)
        finally:
            os.close(fd)
        return path, identity, source, _read_bytecode(dfd, directory, name)
    finally:
        os.close(dfd)


def load_module(name: str, directory: str) -> types.ModuleType:
    """The module `name` from `directory`, executed once per file version."""
    # [A-Za-z_][A-Za-z0-9_]*, checked without `re` (its import costs a login ~1.5 ms).
    if not (name.isascii() and name.isidentifier() and len(name) <= MAX_NAME_LENGTH):
        raise ModuleLoadError(f"invalid module name {name!r}")
    path, identity, source, bytecode = _read_vetted(name, directory)
    if source is None:
        return _cache[path][1]
    code = _code_from_bytecode(bytecode, source)
    if code is None:
        code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType(f"pypam_module_{name}")
    module.__file__ = path
    exec(code, module.__dict__)  # noqa: S102 - the vetted module file, by design
    _cache[path] = (identity, module)
    return module
