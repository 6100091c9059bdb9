"""Import cost per PAM hook of the shipped modules (tpm_pin, master_key).

    .venv/bin/python bench/imports.py [--runs 20] [--tree OTHER_CHECKOUT]

For each hook: what pam_pypam's interpreter imports (through the real shim, on a
swtpm with root's PIN enrolled and typed: devtools/imports.py), then how long a fresh
interpreter, started as the shim starts it, spends importing exactly that (pypam's
dispatcher, the module through pypam's loader, the hook's own imports): the best of
--runs.
`--tree DIR` measures another checkout the same way beside this one (before/after a
change): DIR is a `git worktree` of the other commit, built in place (its
build/pam_pypam.so must load DIR's own pypam, pinutil and modules).
Not a test: timings depend on the machine; tests/test_import_budget.py holds the
allow-lists. `make bench` runs it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cases import Context
from bench.pin import PIN, pin_setup
from devtools.imports import HOOKS, hook_imports, import_cost_ms, top_level
from devtools.pamhost import PamService

MODULES = ("tpm_pin", "master_key")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="fresh interpreters per hook")
    parser.add_argument("--tree", help="another checkout to time the same imports in")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="pypam-bench-imports-", dir="/tmp")
    os.chmod(workdir, 0o755)
    rows = []
    try:
        ctx = Context(root=ROOT, workdir=workdir, modules="", pypam_so="", pam_python_so="")
        with pin_setup(ctx) as setup, PamService() as confdir:
            for module in MODULES:
                for hook in HOOKS:
                    line = f"module={module} policy={setup['policy']}"
                    names = hook_imports(confdir, line, hook, answers=[PIN])
                    ours = [n for n in names if top_level([n]) & {"pypam", "pinutil"}]
                    other = None
                    if args.tree:
                        shim = os.path.join(args.tree, "build", "pam_pypam.so")
                        theirs = hook_imports(confdir, line, hook, answers=[PIN], shim=shim)
                        other = import_cost_ms(module, theirs, args.runs, args.tree)
                    rows.append((module, hook, len(names), len(ours),
                                 import_cost_ms(module, names, args.runs), other))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    other_head = f" {'--tree ms':>9}" if args.tree else ""
    print(f"{'module':<11} {'hook':<14} {'modules':>7} {'ours':>5} {'ms':>7}{other_head}")
    for module, hook, count, ours, ms, other in rows:
        tail = f" {other:9.1f}" if other is not None else ""
        print(f"{module:<11} {hook:<14} {count:>7} {ours:>5} {ms:7.1f}{tail}")
    print(f"(best of {args.runs} fresh interpreters per hook; 'ours': pypam and pinutil "
          "modules among them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
