"""Where libpam's and libc's functions come from.

A host that loaded libpam privately (ctypes, pypamtest, RTLD_LOCAL) hides it from the
global namespace, while pam_wrapper (LD_PRELOAD) must win over the real libpam when it
is there: so symbols are resolved from the global namespace first, then from libpam.
"""
from ._libpam import ffi

_global = ffi.dlopen(None)


def _load_pam():
    try:
        _global.pam_get_item  # noqa: B018 - probing whether the symbol is global
        return _global
    except (AttributeError, NotImplementedError, ffi.error):
        return ffi.dlopen("libpam.so.0")


pam = _load_pam()
libc = _global

__all__ = ["ffi", "libc", "pam"]
