"""The pam.d arguments pam_pypam itself understands: module= and moduledir=."""
from __future__ import annotations

import os


class ArgumentError(Exception):
    """A pam.d line pam_pypam cannot accept (the message is for syslog)."""


class ModuleArguments:
    """What pam_pypam took from a pam.d line (a plain class: see conversation.py)."""

    __slots__ = ("args", "module", "moduledir")

    def __init__(self, module: str, moduledir: str, args: list[str]) -> None:
        self.module = module
        self.moduledir = moduledir
        self.args = args


def parse_arguments(argv: list[str], default_moduledir: str) -> ModuleArguments:
    """Take module=/moduledir= out of argv; everything else goes to the module in order."""
    module = moduledir = None
    rest = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key == "module":
            if module is not None:
                raise ArgumentError("module= given twice")
            module = value
        elif sep and key == "moduledir":
            if moduledir is not None:
                raise ArgumentError("moduledir= given twice")
            if not os.path.isabs(value) or os.path.normpath(value) != value.rstrip("/") \
                    or ".." in value.split("/"):
                raise ArgumentError("moduledir= must be an absolute, normalised path")
            moduledir = value
        else:
            rest.append(arg)
    if module is None:
        raise ArgumentError("module= is required")
    return ModuleArguments(module, moduledir or default_moduledir, rest)
