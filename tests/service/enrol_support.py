"""Helpers of the enrolment tests through pinutild (tests/service/test_enrol_*.py): a
pinutild inside the test accounts' namespace (so its password proof reads their
/etc/shadow and /etc/pam.d/pinutil), and a scripted client that converses with it
as another uid."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence

from devtools.pinutild import PYTHON, ROOT, Pinutild
from pinutil.service import protocol
from tests.support.accounts import as_user as _setpriv_to

USER, UID = "pinutiltest", 4242
PASSWORD = "tr0ub4dor&3 correct"
PIN, PIN2 = "2580", "739146"

# One conversation in a child process: argv = socket, request (JSON, bytes as
# {"hex": ...}), answers (JSON list, one per prompt that wants one). Prints
# {"prompts": [[text, style], ...], "reply": {...}} (bytes as hex), or "raised".
_CONVERSE = """
import json, sys
sys.path.insert(0, ROOT_DIR)
from pinutil import errors
from pinutil.service import client
path, request, answers = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
request = {k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for k, v in request.items()}
seen = []
def answer(text, style):
    seen.append([text, style])
    if style in client.ANSWERED:
        return bytearray(answers.pop(0).encode() if answers else b"")
try:
    reply = client.converse(path, request, answer, 120)
except errors.PinutilError as e:
    reply = {"raised": f"{type(e).__name__}: {e}"}
print(json.dumps({"prompts": seen,
                  "reply": {k: v.hex() if isinstance(v, bytes) else v for k, v in reply.items()}}))
""".replace("ROOT_DIR", repr(ROOT))


def as_user(uid: int = UID, gid: int | None = None) -> list[str]:
    """tests.support.accounts.as_user, the test user by default."""
    return _setpriv_to(uid, gid)


def converse(path: str, request: dict, answers: Sequence[str] = (),
             who: Sequence[str] = ()) -> dict:
    """One conversation with pinutild at `path`, as `who` (a setpriv prefix)."""
    wire = {k: {"hex": v.hex()} if isinstance(v, bytes) else v for k, v in request.items()}
    done = subprocess.run([*who, PYTHON, "-I", "-c", _CONVERSE, path, json.dumps(wire),
                           json.dumps(list(answers))], capture_output=True, text=True,
                          timeout=300, cwd="/", check=False, env={"PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise RuntimeError(f"the client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def start_in_namespace(pin_env, accounts, *extra: str, name: str = "pinutild.sock",
                       prefix: Sequence[str] = ()) -> Pinutild:
    """pinutild (as root unless `prefix` drops it) inside the accounts' namespace."""
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, name), extra)
    service.argv = [*accounts.prefix(), *prefix, *service.argv]
    service.start()
    return service


@contextlib.contextmanager
def running_in_namespace(pin_env, accounts, *extra: str, **options) -> Iterator[Pinutild]:
    """start_in_namespace(), and the service stopped when the block ends, however."""
    service = start_in_namespace(pin_env, accounts, *extra, **options)
    try:
        yield service
    finally:
        service.stop()


def raw_exchange(path: str, frames: Sequence[bytes], read_prompts: int = 0) -> socket.socket:
    """A hand-made client: send `frames`, read `read_prompts` frames; the open socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    for frame in frames:
        sock.sendall(frame)
    for _ in range(read_prompts):
        read_frame(sock)
    return sock


def read_frame(sock: socket.socket) -> dict:
    header = _exactly(sock, protocol.HEADER_SIZE)
    return protocol.decode_body(_exactly(sock, protocol.body_length(header)))


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


# A hand-made client in a child process (to be another uid): argv = socket, then JSON
# steps: ["send", hex] sends bytes, ["read"] prints the next frame as a JSON line (or
# {"eof": true}), ["hold"] waits until stdin closes, ["close"] closes the connection.
_HOSTILE = """
import json, socket, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import protocol
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(300)
sock.connect(sys.argv[1])
def exactly(size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
for step in json.loads(sys.argv[2]):
    if step[0] == "send":
        sock.sendall(bytes.fromhex(step[1]))
    elif step[0] == "read":
        try:
            fields = protocol.decode_body(exactly(protocol.body_length(exactly(4))))
            print(json.dumps({k: v.hex() if isinstance(v, bytes) else v
                              for k, v in fields.items()}), flush=True)
        except (EOFError, OSError):
            print(json.dumps({"eof": True}), flush=True)
    elif step[0] == "hold":
        sys.stdin.read()
    elif step[0] == "close":
        sock.close()
""".replace("ROOT_DIR", repr(ROOT))


def hostile(path: str, steps: list, who: Sequence[str] = ()) -> subprocess.Popen:
    """Start the hand-made client; read its frames with `next_line(proc)`."""
    wire = [[s[0], s[1].hex()] if len(s) > 1 else list(s) for s in steps]
    return subprocess.Popen([*who, PYTHON, "-I", "-c", _HOSTILE, path, json.dumps(wire)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd="/", env={"PATH": "/usr/bin:/bin"})


def next_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the hand-made client ended (exit {proc.wait()})")
    return json.loads(line)


def finish(proc: subprocess.Popen) -> list[dict]:
    """Close its stdin (ends a hold) and collect the rest of its lines."""
    out, _ = proc.communicate(timeout=300)
    return [json.loads(line) for line in out.splitlines()]
