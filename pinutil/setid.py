"""Is this process set-id? The one answer pinutil uses (the login backends, the CLI).

A set-id process (sudo, su, the set-gid `pinutil` launcher, a binary with file
capabilities) runs with an environment that belongs to a less privileged caller: it
must not hand that environment (TSS2_* variables) to libtss2, nor trust it otherwise.
"""
from __future__ import annotations

import os

_AT_SECURE = 23  # <elf.h>: the kernel's "this exec gained privilege" auxv entry
_AUXV_ENTRY = 16  # two unsigned longs on 64-bit Linux: key, value


def _at_secure() -> bool | None:
    """The kernel's AT_SECURE for this process; None if it cannot be read."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            auxv = f.read()
    except OSError:
        return None
    for i in range(0, len(auxv) - _AUXV_ENTRY + 1, _AUXV_ENTRY):
        key = int.from_bytes(auxv[i:i + 8], "little")
        if key == _AT_SECURE:
            return int.from_bytes(auxv[i + 8:i + 16], "little") != 0
        if key == 0:
            break
    return None


def _ids_differ() -> bool:
    """Real and effective (or saved) ids differ: a set-id program that changed ids after
    exec, where AT_SECURE may say nothing."""
    return len(set(os.getresuid())) > 1 or len(set(os.getresgid())) > 1


def running_setid() -> bool:
    """True when this process must not trust its environment: the kernel marked the exec
    AT_SECURE (set-uid, set-gid or file capabilities), or its real, effective and saved
    ids differ. Unknown (no /proc) counts as set-id: assume the worst."""
    secure = _at_secure()
    return secure is None or secure or _ids_differ()
