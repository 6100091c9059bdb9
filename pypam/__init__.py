"""pypam: write Linux-PAM modules in Python.

A module is a Python file defining any of `authenticate`, `setcred`, `acct_mgmt`,
`open_session`, `close_session`, `chauthtok`, each `(pamh, flags, args) -> int`,
loaded by `pam_pypam.so module=NAME [moduledir=/abs/dir] [args...]`.

Every PAM_* constant is here as a plain int; the IntEnums `Result`, `Item`, `Flag` and
`MessageStyle` are loaded on first use (the enum machinery costs milliseconds a login).
"""
from .constants import *
from .conversation import Message, Response
from .errors import PamError

_ENUMS = ("Result", "Item", "Flag", "MessageStyle")


def __getattr__(name: str):
    if name in _ENUMS:
        from . import enums

        return getattr(enums, name)
    raise AttributeError(f"module 'pypam' has no attribute {name!r}")


__all__ = ["Message", "PamError", "Response", *_ENUMS]  # noqa: PLE0604 - names, all str
__all__ += [name for name in dir() if name.startswith("PAM_")]
