"""pam.d arguments: one parser, with one set of rules, for pam_pypam's own arguments
(module=, moduledir=) and for every module's.

A module declares what its pam.d line may say, once, at import:

    from pypam.arguments import Arguments, Option, Switch, absolute_path, choice

    ARGUMENTS = Arguments(
        Switch("debug"),
        Option("policy", absolute_path),
        Option("backend", choice("auto", "direct", "helper"), default="auto"),
    )

and reads it in each hook: `options = ARGUMENTS.parse(args, warn=...)` gives a dict
with every declared name (a switch: True or False; an option: its checked value or its
default). The rules, the same for every module:

- `NAME` is a switch, `NAME=VALUE` an option; the same switch twice means it once;
- an argument nobody declared is passed to `warn` once (LOG_WARNING in the modules, as
  systemd's PAM modules do) and otherwise ignored: a typo never locks anyone out, and
  the log says it was ignored;
- a declared argument in the wrong shape (a switch with a value, an option without one,
  a value its check refuses, an option given twice) raises ArgumentError: the module
  fails closed instead of guessing which value was meant. An ArgumentError that
  escapes a hook becomes PAM_SERVICE_ERR in the dispatcher.

Checks are plain functions `str -> value` raising ValueError with a reason that reads
after "NAME= " (`absolute_path`, `choice(...)`, `int_range(low, high)`). They are
typed in words, not with collections.abc.Callable: importing that costs every login
~1 ms (this file is loaded by the dispatcher).
"""
from __future__ import annotations

import os

MAX_SHOWN = 64  # characters of a pam.d argument quoted in a log line


class ArgumentError(Exception):
    """A pam.d line that cannot be accepted (the message is for syslog)."""


def shown(text: str) -> str:
    """A pam.d argument quoted for one syslog line (repr, cut to MAX_SHOWN characters)."""
    return repr(text[:MAX_SHOWN] + ("..." if len(text) > MAX_SHOWN else ""))


# -- checks for option values ------------------------------------------------------------

def absolute_path(text: str) -> str:
    """A path starting at /: never resolved against the application's working directory."""
    if not text.startswith("/"):
        raise ValueError("must be an absolute path")
    return text


def normalised_absolute_path(text: str) -> str:
    """An absolute path with no `.`, `..`, `//` or trailing `/` to hide where it leads."""
    if not os.path.isabs(text) or os.path.normpath(text) != text.rstrip("/") \
            or ".." in text.split("/"):
        raise ValueError("must be an absolute, normalised path")
    return text


def choice(*values: str):
    """A check (`str -> str`) that accepts exactly one of `values`."""
    def check(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return text
    return check


def int_range(low: int, high: int):
    """A check (`str -> int`) for a decimal integer from `low` to `high` (ASCII digits only: int() would also take
    spaces, underscores and other scripts' digits)."""
    def check(text: str) -> int:
        digits = text[1:] if text.startswith("-") and low < 0 else text
        if not (digits.isascii() and digits.isdigit()) or not low <= int(text) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(text)
    return check


# -- declarations ------------------------------------------------------------------------

class Switch:
    """An argument without a value (`debug`): True when present. (Not `pypam.Flag`,
    which is PAM's flags enum.)"""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Option:
    """An argument with a value (`policy=/etc/x`), checked by `check` (`str -> value`,
    ValueError with the reason if the text is not acceptable)."""

    __slots__ = ("check", "default", "name", "required")

    def __init__(self, name: str, check=str, *,
                 default: object = None, required: bool = False) -> None:
        self.name = name
        self.check = check
        self.default = default
        self.required = required


class Arguments:
    """What one module's pam.d line may hold (see the module docstring for the rules)."""

    __slots__ = ("_declared",)

    def __init__(self, *declared: Switch | Option) -> None:
        self._declared = {d.name: d for d in declared}

    def split(self, args: list[str]) -> tuple[dict[str, object], list[str]]:
        """The declared values, and the undeclared arguments in their order."""
        values: dict[str, object] = {}
        unknown = []
        for arg in args:
            name, has_value, text = arg.partition("=")
            declared = self._declared.get(name)
            if declared is None:
                unknown.append(arg)
            elif isinstance(declared, Switch):
                if has_value:
                    raise ArgumentError(f"{name} takes no value (got {shown(arg)})")
                values[name] = True
            elif not has_value:
                raise ArgumentError(f"{name}= needs a value")
            elif name in values:
                raise ArgumentError(f"{name}= given twice")
            else:
                try:
                    values[name] = declared.check(text)
                except ValueError as e:
                    raise ArgumentError(f"{name}= {e} (got {shown(text)})") from None
        for name, declared in self._declared.items():
            if name in values:
                continue
            if isinstance(declared, Switch):
                values[name] = False
            elif declared.required:
                raise ArgumentError(f"{name}= is required")
            else:
                values[name] = declared.default
        return values, unknown

    def parse(self, args: list[str], warn) -> dict[str, object]:
        """The declared values; `warn(text)` gets one line per distinct undeclared
        argument."""
        values, unknown = self.split(args)
        for arg in dict.fromkeys(unknown):
            warn(f"ignoring unknown argument {shown(arg)}")
        return values


# -- pam_pypam's own arguments -----------------------------------------------------------

PAM_PYPAM = Arguments(
    Option("module", required=True),  # the loader checks the name itself
    Option("moduledir", normalised_absolute_path),
)


class ModuleArguments:
    """What pam_pypam took from a pam.d line (a plain class: see conversation.py)."""

    __slots__ = ("args", "module", "moduledir")

    def __init__(self, module: str, moduledir: str, args: list[str]) -> None:
        self.module = module
        self.moduledir = moduledir
        self.args = args


def parse_arguments(argv: list[str], default_moduledir: str) -> ModuleArguments:
    """Take module=/moduledir= out of argv; everything else goes to the module in order."""
    values, rest = PAM_PYPAM.split(argv)
    return ModuleArguments(values["module"], values["moduledir"] or default_moduledir, rest)
