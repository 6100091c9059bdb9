"""Kill a process at a chosen point, as a crash or power loss would.

- `run_killed(target, count, args)` runs pinutil's main in a fresh `python -I` process
  in which the function `target` ("module:attr" or "module:Class.method") is wrapped:
  right after its `count`-th call returns, the process SIGKILLs itself (no cleanup, no
  finally, no atexit). What the function did (a TPM command, a file written) is done;
  the next step is not. The point must be reached: a command that exits on its own
  fails the run (the point was not where the test thought).
- `KillAtCommand(code, nth)`, an intercept of tests/support/tpm_proxy.py: at the `nth`
  TPM command with that command code it SIGKILLs the process `pid` and all its
  descendants (pinutild and its TPM worker), and the TPM never sees that command. For
  code that cannot be wrapped from outside (a service, another program).

The caller then checks the state left behind, and that running a command again
finishes or repairs it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.support.tpm_proxy import command_code

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


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children, ... (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class KillAtCommand:
    """TpmProxy intercept: SIGKILL `pid` and its descendants at their `nth` command
    with code `code`, which the TPM never sees. `seen` counts those commands."""

    def __init__(self, code: int, nth: int) -> None:
        self.code, self.nth = code, nth
        self.seen = 0
        self.pid = 0

    def __call__(self, command: bytes, forward):
        if command_code(command) == self.code:
            self.seen += 1
            if self.seen == self.nth:
                for pid in [self.pid, *descendants(self.pid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return None
        return forward(command)
