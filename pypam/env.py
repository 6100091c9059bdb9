"""The PAM environment of a handle as a mutable mapping (pam_getenv/putenv/getenvlist)."""
from collections.abc import Iterator, MutableMapping

from .constants import PAM_SUCCESS
from .errors import PamError
from .libpam import ffi, libc, pam
from .text import decode, encode


def _check_name(name: str) -> bytes:
    raw = encode(name)
    if not raw or b"=" in raw:
        raise KeyError(name)
    return raw


class PamEnv(MutableMapping):
    """`pamh.env`: reads and writes go straight to libpam; nothing is cached."""

    def __init__(self, pamh_ptr) -> None:
        self._h = pamh_ptr

    def __getitem__(self, name: str) -> str:
        value = pam.pam_getenv(self._h, _check_name(name))
        if value == ffi.NULL:
            raise KeyError(name)
        return decode(ffi.string(value))

    def __setitem__(self, name: str, value: str) -> None:
        rc = pam.pam_putenv(self._h, _check_name(name) + b"=" + encode(value))
        if rc != PAM_SUCCESS:
            raise PamError(rc)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        rc = pam.pam_putenv(self._h, _check_name(name))
        if rc != PAM_SUCCESS:
            raise PamError(rc)

    def _snapshot(self) -> dict[str, str]:
        envlist = pam.pam_getenvlist(self._h)
        if envlist == ffi.NULL:
            raise MemoryError
        result = {}
        try:
            i = 0
            while envlist[i] != ffi.NULL:
                name, _, value = decode(ffi.string(envlist[i])).partition("=")
                result[name] = value
                i += 1
        finally:
            # pam_getenvlist hands us malloc'd copies: free every string and the array.
            i = 0
            while envlist[i] != ffi.NULL:
                libc.free(envlist[i])
                i += 1
            libc.free(envlist)
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot())

    def __len__(self) -> int:
        return len(self._snapshot())

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except KeyError:
            return False
        return True
