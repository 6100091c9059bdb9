"""pinutild's queue takes turns per uid: one uid with 16 requests waiting does not put
another uid's single login behind all of them. Order, not time, is asserted: the TPM
proxy's transcript says in which order the worker read the users' PIN indexes."""
from __future__ import annotations

import subprocess
import threading

from pinutil.service import client
from tests.support.pin_env import handle_of
from tests.support.pinutild import AS_NOBODY, PYTHON, ROOT, start_pinutild
from tests.support.tpm_gate import gated_tpm
from tests.support.tpm_proxy import CC_NV_READ_PUBLIC

FLOOD = 16  # the per-uid connection cap

# As nobody: one pin-status, then (on a line from stdin) FLOOD - 1 more, each on its
# own connection; "sent" once all are written; then every reply's result.
_FLOODER = """
import socket, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import protocol
frame = protocol.encode({"verb": "pin-status", "user": "nobody"})
socks = []
def send():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.sendall(frame)
    socks.append(s)
send()
print("first", flush=True)
sys.stdin.readline()
for _ in range(int(sys.argv[2]) - 1):
    send()
print("sent", flush=True)
for s in socks:
    s.settimeout(120)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    print(protocol.decode_frame(data)["result"], flush=True)
""".replace("ROOT_DIR", repr(ROOT))


def barrier(path: str) -> None:
    """Returns once the service has read every request sent before: a malformed one,
    answered by the event loop itself (the worker is held), on a connection made after
    them (accepted after them, read in the same turn of the loop or a later one)."""
    reply = client.call(path, {"verb": "no-such-verb"}, 30)
    assert reply["result"] == "bad_request"


def test_one_uids_queued_flood_does_not_hold_up_another_uids_login(pin_env):
    proxy, gate = gated_tpm(pin_env)
    service = start_pinutild(pin_env, "--tpm-timeout", "120", "--request-timeout", "120")
    flood = subprocess.Popen([*AS_NOBODY, PYTHON, "-I", "-c", _FLOODER, service.socket,
                              str(FLOOD)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    try:
        assert flood.stdout.readline() == "first\n"
        assert gate.seen.wait(60)  # the flood's first request is with the worker, held
        flood.stdin.write("go\n")
        flood.stdin.flush()
        assert flood.stdout.readline() == "sent\n"
        login: list[dict] = []
        waiting = threading.Thread(target=lambda: login.append(client.call(
            service.socket, {"verb": "pin-status", "user": "root"}, 120)))
        waiting.start()
        barrier(service.socket)  # root's request is queued behind the flood's 15
        gate.open()
        waiting.join()
        assert login[0]["result"] == "success", login
        assert [flood.stdout.readline() for _ in range(FLOOD)] == ["success\n"] * FLOOD
        read = [int.from_bytes(e.command[10:14], "big") for e in proxy.exchanges
                if e.code == CC_NV_READ_PUBLIC]
        per_request = read.count(handle_of("root"))
        assert per_request >= 1 and read.count(handle_of("nobody")) == FLOOD * per_request
        before = read[:read.index(handle_of("root"))].count(handle_of("nobody"))
        # In turns: the flood's first (with the worker) and at most its next one; a
        # FIFO served all 16 first.
        assert before <= 2 * per_request, read
    finally:
        gate.open()
        flood.kill()
        flood.wait()
        service.stop()
        proxy.stop()
