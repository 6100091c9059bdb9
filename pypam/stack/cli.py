"""The `pypam` admin command: `pypam stack simulate|explain|check`, `pypam enable`,
`disable`, `status` (docs/pypam.md; the last three in admin.py).

Thin: argparse -> a call into pypam.stack -> text or JSON -> exit status. Every error
the engine can meet in a configuration is part of its answer (file:line), never a
traceback; `StackUsageError` is the one exception caught here.
"""
from __future__ import annotations

import argparse
import json
import sys

from . import admin, check, parser, render, simulate
from .codes import parse_code
from .modules import assume_present

EXIT_OK, EXIT_WARNING, EXIT_ERROR = 0, 1, 2
EXIT_USAGE, EXIT_NOINPUT = 64, 66          # sysexits.h
STAGE_CHOICES = ("auth", "account", "password", "session", "setcred", "close_session")


class StackUsageError(Exception):
    """Something the user asked cannot be answered (unknown pattern, missing result)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:          # usage errors: EX_USAGE, not 2
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--confdir", help="read services from DIR as pam_start_confdir does "
                   "(default: /etc/pam.d, then /usr/lib/pam.d, as pam_start)")
    p.add_argument("--root", default="/", help="a system mounted or extracted at ROOT "
                   "(its /etc/pam.d, /usr/lib/pam.d and modules)")
    p.add_argument("--assume-modules", action="store_true",
                   help="treat every module as installed with every function "
                   "(for stacks from another machine)")


def build_parser() -> argparse.ArgumentParser:
    top = _Parser(prog="pypam", description="pypam administration")
    groups = top.add_subparsers(dest="group", required=True, parser_class=_Parser)
    stack = groups.add_parser("stack", help="read, simulate, explain and check PAM stacks")
    cmds = stack.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = cmds.add_parser("simulate", help="what libpam returns for given module results")
    sim.add_argument("service")
    sim.add_argument("--stage", required=True, choices=STAGE_CHOICES)
    sim.add_argument("--result", action="append", default=[], metavar="PATTERN=CODE",
                     help="what matching lines return (FILE:LINE, a module file name, "
                     "or a pypam module name); repeatable, first match wins")
    sim.add_argument("--default", metavar="CODE", help="what every other line returns")
    sim.add_argument("--json", action="store_true")
    _common(sim)

    exp = cmds.add_parser("explain", help="the resolved stack and every way it can end")
    exp.add_argument("service")
    exp.add_argument("--stage", choices=STAGE_CHOICES)
    exp.add_argument("--json", action="store_true")
    _common(exp)

    chk = cmds.add_parser("check", help="find dangerous or broken stacks")
    chk.add_argument("services", nargs="*", help="default: every service")
    chk.add_argument("--credential-module", action="append", default=[], metavar="NAME",
                     help="also count NAME (a module file or pypam module) as checking "
                     "a credential")
    chk.add_argument("--json", action="store_true")
    _common(chk)
    admin.add_parsers(groups)
    return top


def _load(args: argparse.Namespace, service: str):
    probe = assume_present if args.assume_modules else None
    return parser.load_service(service, confdir=args.confdir, root=args.root, probe=probe)


def _results(args: argparse.Namespace) -> simulate.Results:
    rules = []
    for item in args.result:
        pattern, sep, code = item.rpartition("=")
        if not sep or not pattern:
            raise StackUsageError(f"--result {item!r}: expected PATTERN=CODE")
        try:
            rules.append((pattern, parse_code(code)))
        except ValueError as error:
            raise StackUsageError(f"--result {item!r}: {error}") from None
    default = None
    if args.default is not None:
        try:
            default = parse_code(args.default)
        except ValueError as error:
            raise StackUsageError(f"--default: {error}") from None

    def results(h, function: str, pass_: str) -> int:
        for pattern, code in rules:
            if render.matches(h, pattern, args.confdir):
                return code
        if default is not None:
            return default
        raise StackUsageError(f"{h.where}: no --result matches {h.name} "
                              f"({render.pattern_hint(h)}) and no --default given")
    return results


def cmd_simulate(args: argparse.Namespace) -> int:
    stack = _load(args, args.service)
    outcome = simulate.simulate_stage(stack, args.stage, _results(args))
    if args.json:
        print(json.dumps(render.simulation_json(stack, args.stage, outcome), indent=2))
    else:
        print(render.simulation_text(stack, args.stage, outcome))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    stack = _load(args, args.service)
    stages = [args.stage] if args.stage else ["auth", "account", "password", "session"]
    data = render.explanation_json(stack, stages)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(render.explanation_text(data))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    findings = check.check_services(args.services, confdir=args.confdir, root=args.root,
                                    probe=assume_present if args.assume_modules else None,
                                    extra_credentials=args.credential_module)
    if args.json:
        print(json.dumps([f.as_json() for f in findings], indent=2))
    else:
        for f in findings:
            print(f.as_text())
        if not findings:
            print("no findings")
    worst = max((f.rank for f in findings), default=0)
    return {0: EXIT_OK, 1: EXIT_OK, 2: EXIT_WARNING, 3: EXIT_ERROR}[worst]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.group in admin.COMMANDS:
        return admin.COMMANDS[args.group](args)
    try:
        return {"simulate": cmd_simulate, "explain": cmd_explain,
                "check": cmd_check}[args.command](args)
    except StackUsageError as error:
        print(f"pypam: {error}", file=sys.stderr)
        return EXIT_USAGE
    except check.NoServices as error:
        print(f"pypam: {error}", file=sys.stderr)
        return EXIT_NOINPUT
