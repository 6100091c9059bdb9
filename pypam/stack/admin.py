"""`pypam enable`, `pypam disable`, `pypam status` (docs/pypam.md): text for people,
exit codes for scripts. The planning is enable.py, the proof proof.py, the writing and
the record apply.py."""
from __future__ import annotations

import argparse
import difflib
import os
import sys

from . import apply, debian, enable, presets
from .modules import assume_present

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 2, 64


def _options(args: argparse.Namespace) -> enable.Options:
    return enable.Options(root=args.root, confdir=args.confdir,
                          probe=assume_present if args.assume_modules else None,
                          module=args.module_path, master_key=args.master_key,
                          credentials=frozenset(args.credential_module))


def _indent(lines, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in "\n".join(lines).splitlines())


def cmd_enable(args: argparse.Namespace) -> int:
    if args.module != "tpm_pin":
        print(f"pypam enable: unknown module {args.module!r} (only tpm_pin)", file=sys.stderr)
        return EXIT_USAGE
    state = apply.State(args.root)
    if state.load() is not None:
        print(f"pypam enable: {state.record_path} exists: pypam enable already changed this "
              "system (see `pypam status`); run `pypam disable --apply` first",
              file=sys.stderr)
        return EXIT_REFUSED
    if args.preset == "local" and not args.confdir:
        why_not = debian.managed(args.root)
        if why_not is None:
            return _enable_common_auth(args, state)
        print(f"note: not through pam-auth-update ({why_not}): editing each service's "
              "own file\n")
    services = args.service or list(presets.PRESETS[args.preset or "unlock"])
    plans = enable.plan(services, _options(args), explicit=bool(args.service))
    changing = [sp for sp in plans if sp.changes]
    through = [sp for sp in plans if not sp.refused and sp.proof and not sp.changes]
    refused = [sp for sp in plans if sp.refused]
    for sp in changing + through:
        _show(sp)
    absent = [sp.service for sp in plans if sp.skipped.startswith("no ")]
    for sp in plans:
        if sp.skipped and sp.service not in absent:
            print(f"skipped {sp.service}: {sp.skipped}")
    if absent:
        print(f"not on this system (skipped): {', '.join(absent)}")
    for sp in refused:
        print(f"REFUSED {sp.service}: {sp.refused}")
        for v in (sp.proof.violations if sp.proof else []):
            for example in v.examples:
                print(f"    e.g. {example}")
    if refused:
        print("\nnothing written: every service must pass (name the ones you want with "
              "--service)")
        return EXIT_REFUSED
    if not changing:
        print("\nnothing to change")
        return EXIT_OK
    if not args.apply:
        print("\ndry run: nothing written. Keep a root shell open, then run the same "
              "command with --apply")
        return EXIT_OK
    try:
        state.apply([(sp.path, sp.before, sp.after) for sp in changing],
                    [sp.service for sp in changing + through], ["pypam", *sys.argv[1:]])
    except apply.ApplyError as error:
        print(f"pypam enable: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"\nwritten: {', '.join(sp.path for sp in changing)} (backups and record in "
          f"{state.dir}; `pypam disable --apply` restores them). Test each service "
          "now (e.g. pamtester sudo $USER authenticate) before you close the root shell.")
    return EXIT_OK


def _enable_common_auth(args: argparse.Namespace, state: apply.State) -> int:
    """--preset local on Debian: pam-auth-update --enable pypam-tpm-pin."""
    opts = _options(args)
    plan = enable.plan_common_auth(opts)
    if plan.error:
        print(f"REFUSED: {plan.error}")
        return EXIT_REFUSED
    print(f"=== pam-auth-update --enable {debian.PROFILE} (Debian's own way to change "
          "common-auth)")
    for path, (before, after) in plan.files.items():
        print("".join(difflib.unified_diff(
            before.decode("latin-1").splitlines(keepends=True),
            after.decode("latin-1").splitlines(keepends=True), path,
            f"{path} (after {_writer(path)})")), end="")
    print()
    local = set(presets.LOCAL)
    for sp in plan.services:
        if sp.service in local or sp.refused:
            _show(sp)
    others = [sp.service for sp in plan.services if sp.service not in local and not sp.refused]
    if others:
        print("also proven (they read common-auth): " + ", ".join(others))
    for name in plan.remote:
        print(f"note: {name} serves the network and reads common-auth: the PIN line reaches "
              "it, but the module offers no PIN to a remote login (PAM_RHOST not local; "
              "the profile has no allow_remote), and with no PIN the proof above shows the "
              "stack exactly as before")
    if plan.refused:
        for sp in plan.refused:
            print(f"REFUSED {sp.service}: {sp.refused}")
        print("\nnothing written: every service that reads common-auth must pass")
        return EXIT_REFUSED
    if not args.apply:
        print("\ndry run: nothing written. Keep a root shell open, then run the same "
              "command with --apply")
        return EXIT_OK
    try:
        state.apply([(p, b, a) for p, (b, a) in plan.files.items()],
                    [sp.service for sp in plan.services], ["pypam", *sys.argv[1:]],
                    kind="pam-auth-update", write=lambda: _write_common_auth(args, plan, state))
    except (apply.ApplyError, debian.DebianError) as error:
        print(f"pypam enable: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"\nwritten: {', '.join(plan.files)} (common-* by pam-auth-update; backups and "
          f"record in "
          f"{state.dir}; `pypam disable --apply` runs pam-auth-update --disable "
          f"{debian.PROFILE}). Test now (e.g. pamtester login $USER authenticate) before "
          "you close the root shell.")
    return EXIT_OK


def _writer(path: str) -> str:
    return "pam-auth-update" if path.rsplit("/", 1)[-1] in debian.COMMON else "pypam enable"


def _write_common_auth(args: argparse.Namespace, plan: enable.CommonAuthPlan,
                       state: apply.State) -> None:
    """pam-auth-update for common-* and, with --master-key, our own atomic writes for
    the services' files."""
    debian.run(args.root, "--enable", debian.PROFILE)
    for path, (_, after) in plan.files.items():
        if path.rsplit("/", 1)[-1] not in debian.COMMON:
            st = os.stat(state.real(path))
            apply.atomic_write(state.real(path), after, st.st_uid, st.st_gid,
                               st.st_mode & 0o7777)


def _show(sp: enable.ServicePlan) -> None:
    print(f"=== {sp.service} ({sp.path})")
    if sp.changes:
        print(sp.diff(), end="")
    for note in sp.notes:
        print(f"note: {note}")
    before, after = sp.tables
    print("auth before:\n" + _indent(before))
    print("auth after:\n" + _indent(after))
    p = sp.proof
    if p is not None and p.ok:
        print(f"proof ({p.cases} cases, the PIN line tried with every return code): "
              "no new way in; with no PIN (no TPM, not enrolled, remote) exactly as "
              "before, prompts included; a correct PIN gets in where a correct password "
              "does, and nowhere else" + ("; master_key runs only in logins that succeed"
                                          if "master_key" in "".join(after) else "")
              + ("; the keyring line runs after master_key after a correct PIN, as after "
                 "a correct password" if p.keyring_after_pin else ""))
    if p is not None and p.skipped_after_pin:
        print("after a correct PIN these auth lines do not run (they still run after "
              "the password): " + ", ".join(p.skipped_after_pin))
    print("check: " + ("nothing new" if not sp.new_findings else "; ".join(
        f.as_text() for f in sp.new_findings)))
    print()


def cmd_disable(args: argparse.Namespace) -> int:
    state = apply.State(args.root)
    record = state.load()
    if record is None:
        print(f"nothing to disable: no record in {state.dir}")
        return EXIT_OK
    states = state.file_states(record)
    bad = False
    for r, now in states:
        print(f"{r.path}: {now}")
        if now == "as enable wrote it":
            old = state.backup_bytes(r).decode("latin-1").splitlines(keepends=True)
            with open(state.real(r.path), "rb") as f:
                cur = f.read().decode("latin-1").splitlines(keepends=True)
            print("".join(difflib.unified_diff(cur, old, r.path, f"{r.path} (restored)")),
                  end="")
        elif now in ("changed since", "missing"):
            bad = True
            print(f"    not restored: someone changed {r.path} after pypam enable wrote it. "
                  f"The original is in {state.dir}/backup/{r.backup}; compare, restore by "
                  "hand if right, then remove the record")
    if bad:
        print("nothing restored (all files or none)")
        return EXIT_REFUSED
    if not args.apply:
        print("dry run: nothing written; run with --apply to restore")
        return EXIT_OK
    undo = None
    if record.get("kind") == "pam-auth-update":
        def undo() -> None:
            debian.run(args.root, "--disable", debian.PROFILE)
    try:
        restored = state.restore(record, undo)
    except (apply.ApplyError, debian.DebianError) as error:
        print(f"pypam disable: {error}", file=sys.stderr)
        return EXIT_REFUSED
    how = " (pam-auth-update --disable)" if undo else ""
    print(f"restored{how}: {', '.join(restored) or 'nothing (the files were as before)'}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    state = apply.State(args.root)
    record = state.load()
    if record is None:
        print(f"not enabled by pypam (no record in {state.dir})")
        return EXIT_OK
    print(f"pypam enable ({record['state']}, {record['when']}): "
          f"{', '.join(record['services'])}")
    if record["state"] != "applied":
        print("  interrupted while writing: `pypam disable --apply` puts back what was there")
    for r, now in state.file_states(record):
        print(f"  {r.path}: {now}")
    return EXIT_OK


def add_parsers(groups) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", default="/", help="a system mounted at ROOT")
    en = groups.add_parser("enable", help="put the TPM PIN into PAM services (dry run "
                           "unless --apply)")
    en.add_argument("module", help="tpm_pin")
    how = en.add_mutually_exclusive_group()
    how.add_argument("--preset", choices=sorted(presets.PRESETS),
                     help="unlock (default): sudo, polkit, screen lockers; local: every "
                     "local login too")
    how.add_argument("--service", action="append", metavar="NAME",
                     help="these services instead of a preset (repeatable)")
    en.add_argument("--master-key", action="store_true", help="also put the keyring "
                    "token (master_key) before pam_gnome_keyring / pam_kwallet5 lines")
    en.add_argument("--apply", action="store_true", help="write (default: show only)")
    en.add_argument("--confdir", help="the pam.d directory to edit (default /etc/pam.d)")
    en.add_argument("--assume-modules", action="store_true",
                    help="treat every module as installed (stacks from another machine)")
    en.add_argument("--credential-module", action="append", default=[], metavar="NAME",
                    help="also count NAME (a module file or pypam module) as checking a "
                    "credential, as `pypam stack check` does")
    en.add_argument("--module-path", default=enable.PYPAM_MODULE, metavar="PATH",
                    help="pam_pypam.so as the lines name it (default: pam_pypam.so)")
    common(en)
    dis = groups.add_parser("disable", help="restore what pypam enable changed (dry run "
                            "unless --apply)")
    dis.add_argument("--apply", action="store_true")
    common(dis)
    common(groups.add_parser("status", help="what pypam enable changed, and whether the "
                             "files are still as it wrote them"))


COMMANDS = {"enable": cmd_enable, "disable": cmd_disable, "status": cmd_status}
