"""Which PAM functions a module file provides, as dlopen + dlsym would find them.

libpam dlopens `path` with RTLD_NOW; a file that is missing or is no shared object
becomes a "faulty module" whose every call returns PAM_MODULE_UNKNOWN, and a module
without, say, `pam_sm_setcred` returns PAM_MODULE_UNKNOWN for pam_setcred only. We read
the ELF dynamic symbol table (stdlib only). Not modelled: a shared object whose own
dependencies fail to load (dlopen fails; we would call it loadable).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Callable

FUNCTIONS = frozenset({"pam_sm_authenticate", "pam_sm_setcred", "pam_sm_acct_mgmt",
                       "pam_sm_open_session", "pam_sm_close_session", "pam_sm_chauthtok"})
Probe = Callable[[str], "frozenset[str] | None"]


def assume_present(path: str) -> frozenset[str]:
    """A probe for stacks from other machines: every module exists and has everything."""
    return FUNCTIONS


#: (file, device, inode, size, mtime) -> exported functions: a module is read once per
#: process, and again only when the file changes.
_SEEN: dict[tuple, frozenset[str] | None] = {}


class ModuleProbe:
    """Probe module files below `root` (a mounted or extracted system)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def __call__(self, path: str) -> frozenset[str] | None:
        real = os.path.join(self.root, path.lstrip("/"))
        try:
            st = os.stat(real)
        except OSError:
            return None
        key = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in _SEEN:
            _SEEN[key] = _exported(real)
        return _SEEN[key]


def _exported(path: str) -> frozenset[str] | None:
    try:
        with open(path, "rb") as f:
            if not os.path.isfile(path):
                return None
            data = f.read(16 * 1024 * 1024)
    except OSError:
        return None
    if data[:4] != b"\x7fELF":
        return None
    try:
        return _elf_functions(data)
    except (struct.error, IndexError, ValueError):
        return FUNCTIONS           # an ELF file we cannot read: assume dlopen works


def _elf_functions(data: bytes) -> frozenset[str] | None:
    if data[4] != 2:               # 32-bit objects cannot load into a 64-bit process
        return None
    endian = "<" if data[5] == 1 else ">"
    e_type = struct.unpack_from(endian + "H", data, 16)[0]
    if e_type != 3:                # ET_DYN
        return None
    shoff, = struct.unpack_from(endian + "Q", data, 0x28)
    shentsize, shnum = struct.unpack_from(endian + "HH", data, 0x3A)
    sections = [struct.unpack_from(endian + "IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    found: set[str] = set()
    for sh in sections:
        if sh[1] != 11:            # SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        str_off = strtab[4]
        for j in range(sh[5] // 24):
            st_name, st_info, _other, st_shndx = struct.unpack_from(
                endian + "IBBH", data, sh[4] + j * 24)
            if st_shndx == 0 or (st_info >> 4) not in (1, 2):   # undefined / local
                continue
            end = data.index(b"\0", str_off + st_name)
            name = data[str_off + st_name:end].decode("latin-1")
            if name in FUNCTIONS:
                found.add(name)
    return frozenset(found)
