"""Find, vet and load a pypam module file.

A module runs with the host's privileges (often root), so its file must be as
trustworthy as the pam.d line that names it: a regular file, owned by root or by the
effective uid, writable by no one else, in a directory (and ancestors) nobody else can
write to. The file is opened once, by descriptor relative to the vetted directory, and
the code compiled from that same descriptor, so a swap between check and use is moot.
"""
from __future__ import annotations

import os
import stat
import types

MAX_NAME_LENGTH = 64
MAX_MODULE_BYTES = 1 << 20


class ModuleLoadError(Exception):
    """The module cannot be used; the message says why (for syslog)."""


_cache: dict[str, tuple[tuple, types.ModuleType]] = {}


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _check_ancestors(directory: str) -> None:
    """Every ancestor must be owned by root/euid and not writable by others (a sticky
    directory such as /tmp is fine: others cannot rename what they do not own)."""
    path = os.path.dirname(directory)
    while True:
        st = os.stat(path)
        sticky = st.st_mode & stat.S_ISVTX
        if not _trusted_owner(st) or (st.st_mode & 0o022 and not sticky):
            raise ModuleLoadError(f"untrusted directory {path} (owner or mode)")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _check_entry(st: os.stat_result, path: str, kind: str) -> None:
    right_type = stat.S_ISDIR(st.st_mode) if kind == "directory" else stat.S_ISREG(st.st_mode)
    if not right_type:
        raise ModuleLoadError(f"{path} is not a regular {kind}")
    if not _trusted_owner(st):
        raise ModuleLoadError(f"{path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        raise ModuleLoadError(f"{path} is group- or world-writable")


def _read_vetted(name: str, directory: str) -> tuple[str, tuple, bytes | None]:
    """Return (path, identity, source); source is None when the cache is current."""
    real = os.path.realpath(directory)
    _check_ancestors(real)
    try:
        dfd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ModuleLoadError(f"cannot open module directory {real}: {e.strerror}") from None
    try:
        _check_entry(os.fstat(dfd), real, "directory")
        path = os.path.join(real, name + ".py")
        try:
            fd = os.open(name + ".py", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as e:
            raise ModuleLoadError(f"cannot open {path}: {e.strerror}") from None
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        _check_entry(st, path, "file")
        if st.st_size > MAX_MODULE_BYTES:
            raise ModuleLoadError(f"{path} is larger than {MAX_MODULE_BYTES} bytes")
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = _cache.get(path)
        if cached is not None and cached[0] == identity:
            return path, identity, None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return path, identity, f.read(MAX_MODULE_BYTES + 1)
    finally:
        os.close(fd)


def load_module(name: str, directory: str) -> types.ModuleType:
    """The module `name` from `directory`, executed once per file version."""
    # [A-Za-z_][A-Za-z0-9_]*, checked without `re` (its import costs a login ~1.5 ms).
    if not (name.isascii() and name.isidentifier() and len(name) <= MAX_NAME_LENGTH):
        raise ModuleLoadError(f"invalid module name {name!r}")
    path, identity, source = _read_vetted(name, directory)
    if source is None:
        return _cache[path][1]
    code = compile(source, path, "exec", dont_inherit=True)
    module = types.ModuleType(f"pypam_module_{name}")
    module.__file__ = path
    exec(code, module.__dict__)  # noqa: S102 - the vetted module file, by design
    _cache[path] = (identity, module)
    return module
