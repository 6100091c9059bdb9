"""Kill a `pinutil` command at a chosen point, as a crash or power loss would.

`run_killed(target, count, args)` runs pinutil's main in a fresh `python -I` process in
which the function `target` ("module:attr" or "module:Class.method") is wrapped: right
after its `count`-th call returns, the process SIGKILLs itself (no cleanup, no finally,
no atexit). What the function did (a TPM command, a file written) is done; the next step
is not. The caller then checks the state left behind and that running a command again
finishes or repairs it. The point must be reached: a command that exits on its own
fails the run (the point was not where the test thought).
"""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_KILL_AT = r"""
import importlib, os, signal, sys
sys.path.insert(0, sys.argv[1])
module, _, path = sys.argv[2].partition(":")
count = int(sys.argv[3])
owner = importlib.import_module(module)
*parents, name = path.split(".")
for parent in parents:
    owner = getattr(owner, parent)
function = getattr(owner, name)
calls = []

def wrapped(*args, **kwargs):
    result = function(*args, **kwargs)
    calls.append(1)
    if len(calls) == count:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(owner, name, wrapped)
from pinutil.cli.app import main
sys.exit(main(sys.argv[4:]))
"""


def run_killed(target: str, count: int, args: list[str], stdin: str = "") -> None:
    """pinutil `args` (as root), SIGKILLed right after the `count`-th call of `target`."""
    done = subprocess.run([sys.executable, "-I", "-c", _KILL_AT, ROOT, target, str(count),
                           *args], input=stdin.encode(), capture_output=True, timeout=60,
                          check=False, cwd="/")
    assert done.returncode == -9, (target, count, done.stdout, done.stderr)
