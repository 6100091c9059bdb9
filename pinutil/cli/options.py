"""pinutil's global options, accepted before and after every command.

Here, not in app.py, so that each command's module (app.py, salt_key.py) adds them to
its own parsers without importing the module that imports it; `add_actions` registers
a command made of actions (`pinutil owner protect`) that way.
"""
from __future__ import annotations

import argparse

from pinutil.pin.policy import DEFAULT_POLICY_PATH


def add_common_options(parser: argparse.ArgumentParser, on_command: bool) -> None:
    """The global options; also accepted after the command (`pinutil status --json`).
    On a command parser they default to SUPPRESS so they never reset a value given
    before the command."""
    extra = {"default": argparse.SUPPRESS} if on_command else {}
    flag = {"action": "store_true", **extra}
    parser.add_argument("--policy", metavar="PATH", **extra,
                        help=f"policy file (root only; default {DEFAULT_POLICY_PATH})")
    parser.add_argument("--json", **flag, help="print one JSON object on stdout")
    parser.add_argument("--stdin", **flag,
                        help="read PINs from standard input, one per line")
    parser.add_argument("--yes", "-y", **flag,
                        help="do not ask for confirmation (root delete)")
    parser.add_argument("-v", "--verbose", **flag, help="diagnostics on stderr")
    parser.add_argument("-m", "--machine", **flag,
                        help="pinpam's machine mode: --json --stdin")


def add_actions(subparsers, command: str, text: str, actions) -> None:
    """Register `command` (help `text`) whose ACTIONs are `actions`, each (name,
    handler, help): every parser takes the global options (`owner`, `salt-key`)."""
    group = subparsers.add_parser(command, help=text, allow_abbrev=False)
    add_common_options(group, on_command=True)
    sub = group.add_subparsers(dest=command.replace("-", "_") + "_command",
                               metavar="ACTION", parser_class=type(group))
    sub.required = True
    for name, handler, help_text in actions:
        leaf = sub.add_parser(name, help=help_text, allow_abbrev=False)
        add_common_options(leaf, on_command=True)
        leaf.set_defaults(handler=handler)
