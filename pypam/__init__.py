"""pypam: write Linux-PAM modules in Python.

A module is a Python file defining any of `authenticate`, `setcred`, `acct_mgmt`,
`open_session`, `close_session`, `chauthtok`, each `(pamh, flags, args) -> int`,
loaded by `pam_pypam.so module=NAME [moduledir=/abs/dir] [args...]`.
"""
from .constants import *  # noqa: F401,F403 - every PAM_* name, as C users know them
from .constants import Flag, Item, MessageStyle, Result
from .conversation import Message, Response
from .errors import PamError

__all__ = ["Flag", "Item", "Message", "MessageStyle", "PamError", "Response", "Result"]
__all__ += [name for name in dir() if name.startswith("PAM_")]
