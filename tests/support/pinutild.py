"""A real pinutild per test: fixtures `pinutild` (on the test's `pin_env` and swtpm) and
`pinutild_policy` (the same, with the environment's policy naming its socket as
`service_socket`, for PAM tests of `backend=daemon` and `auto`).

The service runs as root here, as its own process (`python -m pinutil.service`), on a
socket in the environment's work directory. Callers reach it with `ask(...)`, in this
process or (`as_user=`) in a child dropped to another uid with setpriv, so the service
sees that uid through SO_PEERCRED.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence

import pytest

from pinutil.service import client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
AS_NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--")

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


#: Loaded without TPM code: the package's docstring and the owner NV range (constants,
#: no imports; the policy checks nv_base against it).
NOT_TPM_CODE = {"pinutil.tpm", "pinutil.tpm.handles"}


def tpm_code(modules: list[str]) -> list[str]:
    """Of a process's sys.modules: the TPM binding, the TPM layer's modules, the PIN
    index, the master key's TPM code, tpm2-pytss, cryptography."""
    return [m for m in modules if m not in NOT_TPM_CODE and (
        m.startswith(("pinutil.tpm", "pinutil.pin.index", "pinutil.master_key.token",
                      "tpm2_pytss", "cryptography"))
        or "_tss" in m)]


def wait_for_listener(path: str, proc: subprocess.Popen, output=lambda: "") -> None:
    """Return once `path` accepts connections: the socket file appears at bind(),
    before listen(), so its existence alone races the service (ECONNREFUSED)."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, output()
        assert time.monotonic() < deadline, "pinutild did not start"
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
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def pinutild(pin_env) -> Iterator[Pinutild]:
    """pinutild on this test's policy and swtpm, listening in its work directory."""
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "pinutild.sock"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def pinutild_policy(pin_env, pinutild) -> Pinutild:
    """`pinutild`, and the environment's policy (now and after any rewrite) names its
    socket, so tpm_pin's `daemon` and `auto` backends reach it."""
    pin_env.policy_extra["service_socket"] = pinutild.socket
    pin_env.write_policy()
    return pinutild


def start_pinutild(pin_env, *extra: str, name: str = "pinutild2.sock") -> Pinutild:
    """Another service on the same environment, with extra options (stop it yourself)."""
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, name), extra)
    service.start()
    return service
