"""pinutild for development: the tests' fixtures, the demo and the benchmark start the
service here, as its own process (`python -m pinutil.service --listen PATH`, as root).

Callers reach it with `Pinutild.ask(...)`, in this process or (`as_user=`, a setpriv
prefix) in a child dropped to another uid, so the service sees that uid through
SO_PEERCRED.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Sequence

from pinutil.service import client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

# A caller in a child process: one request from argv[1] (JSON, bytes as {"hex": ...}),
# its reply on stdout as JSON (bytes as hex), or {"raised": "ClassName: text"}.
_CALLER = """
import json, sys
sys.path.insert(0, ROOT_DIR)
from pinutil import errors
from pinutil.service import client
request = {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v
           for k, v in json.loads(sys.argv[2]).items()}
try:
    reply = client.call(sys.argv[1], request, 30)
except errors.PinutilError as e:
    reply = {"raised": f"{type(e).__name__}: {e}"}
print(json.dumps({k: v.hex() if isinstance(v, bytes) else v for k, v in reply.items()}))
""".replace("ROOT_DIR", repr(ROOT))


def wait_for_listener(path: str, proc: subprocess.Popen, output=lambda: "") -> None:
    """Return once `path` accepts connections: the socket file appears at bind(),
    before listen(), so its existence alone races the service (ECONNREFUSED)."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pinutild exited: {output()}")
        if time.monotonic() > deadline:
            raise RuntimeError("pinutild did not start")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            time.sleep(0.01)
        finally:
            probe.close()


class Pinutild:
    """One service process; `ask` sends one request and returns the reply's fields."""

    def __init__(self, policy: str, socket_path: str, extra: Sequence[str] = ()) -> None:
        self.policy, self.socket = policy, socket_path
        self.log = socket_path + ".log"
        self.argv = [PYTHON, "-m", "pinutil.service", "--policy", policy,
                     "--listen", socket_path, *extra]
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         env={"PATH": "/usr/bin:/bin"})
        wait_for_listener(self.socket, self.proc, self.output)

    def output(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def ask(self, as_user: Sequence[str] = (), seconds: float = 30, **fields) -> dict:
        """One request (`verb=...` and its fields); TpmUnavailable etc. as {"raised"}."""
        if not as_user:
            try:
                return client.call(self.socket, fields, seconds)
            except Exception as e:  # noqa: BLE001 - reported like the child does
                return {"raised": f"{type(e).__name__}: {e}"}
        request = {k: {"hex": v.hex()} if isinstance(v, bytes) else v for k, v in fields.items()}
        done = subprocess.run([*as_user, PYTHON, "-I", "-c", _CALLER, self.socket,
                               json.dumps(request)],
                              capture_output=True, text=True, timeout=120, cwd="/", check=False,
                              env={"PATH": "/usr/bin:/bin"})
        if done.returncode != 0:
            raise RuntimeError(f"the caller failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout)
