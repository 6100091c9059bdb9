"""The import budget of a PAM hook: what pam_pypam's interpreter has imported once a
hook of a module ran (through the real shim, in a fresh host process), and what those
imports cost a fresh interpreter. tests/test_import_budget.py holds the allow-lists;
bench/imports.py prints the costs.
"""
from __future__ import annotations

import os
import subprocess
import sysconfig
from collections.abc import Sequence

from devtools.pamhost import PAM_PYPAM_SO, ROOT, PamService, run_pam

#: pypam hook -> (pam.d type, pamhost stage that calls it)
HOOKS = {
    "authenticate": ("auth", "auth"),
    "setcred": ("auth", "setcred"),
    "acct_mgmt": ("account", "acct"),
    "open_session": ("session", "open"),
    "close_session": ("session", "close"),
    "chauthtok": ("password", "chauthtok"),
}
REPORTER_DIR = os.path.join(ROOT, "devtools", "modules")
#: The interpreter the shim embeds, started as the shim starts it (isolated, no site).
PYTHON = ["/usr/bin/python3", "-I", "-S"]


def hook_imports(confdir: PamService, module_args: str, hook: str, *,
                 user: str = "root", answers: Sequence[str] = (),
                 shim: str = PAM_PYPAM_SO) -> list[str]:
    """The modules loaded in pam_pypam's interpreter after `hook` of the module named
    in `module_args` (e.g. "module=tpm_pin policy=/etc/x") ran, in import order: one
    fresh host process, the module's line then a line of devtools' reporter. `shim`:
    another checkout's build/pam_pypam.so (its own pypam, pinutil and modules)."""
    kind, stage = HOOKS[hook]
    record = os.path.join(os.fspath(confdir), f"{hook}.imports")
    service = confdir.write(f"imports-{hook}", (
        f"{kind} optional {shim} {module_args}\n"
        f"{kind} optional {shim} module=report_imports moduledir={REPORTER_DIR} "
        f"record={record}\n"))
    if os.path.exists(record):
        os.unlink(record)
    run_pam(confdir, os.path.basename(service), user=user, stages=(stage,), answers=answers)
    with open(record, encoding="utf-8") as f:
        return f.read().split()


def reporter_only_imports(confdir: PamService) -> list[str]:
    """What pam_pypam's interpreter holds with no module but the reporter: CPython's
    start-up and pypam itself."""
    record = os.path.join(os.fspath(confdir), "framework.imports")
    confdir.write("imports-framework", f"auth optional {PAM_PYPAM_SO} module=report_imports "
                  f"moduledir={REPORTER_DIR} record={record}\n")
    run_pam(confdir, "imports-framework", user="root")
    with open(record, encoding="utf-8") as f:
        return f.read().split()


def top_level(names: Sequence[str]) -> set[str]:
    """"pinutil.tpm.context" -> "pinutil", and so on."""
    return {name.partition(".")[0] for name in names}


_COST = """
import sys, time
sys.path[:0] = {search!r}
start = time.perf_counter()
import pypam.dispatch
from pypam.loader import load_module
load_module({module!r}, {moduledir!r})
for name in {names!r}:
    if name not in sys.modules:
        try:
            __import__(name)
        except ImportError:
            pass
print((time.perf_counter() - start) * 1000)
"""


def import_cost_ms(module: str, names: Sequence[str], runs: int = 20,
                   tree: str = ROOT) -> float:
    """Milliseconds a fresh interpreter (as the shim starts it) spends importing what a
    hook needs: pypam's dispatcher, the module file through pypam's loader, then `names`
    (what hook_imports found) in their order; the best of `runs` (on a busy machine
    noise only adds). `tree`: the checkout whose code is imported."""
    search = [tree, sysconfig.get_path("purelib")]  # the tree and its venv, as `make build`
    code = _COST.format(search=search, module=module, moduledir=os.path.join(tree, "modules"),
                        names=list(names))
    times = []
    for _ in range(runs):
        done = subprocess.run([*PYTHON, "-c", code], capture_output=True, text=True,
                              check=True, env={}, cwd="/")
        times.append(float(done.stdout))
    return min(times)
