"""pinutild's queue takes turns per uid: one uid with 16 requests waiting does not put
another uid's single login behind all of them. Order, not time, is asserted: the TPM
proxy's transcript says in which order the worker read the users' PIN indexes."""
from __future__ import annotations

import json
import subprocess
import threading

from pinutil.service import client
from tests.support.accounts import AS_NOBODY
from tests.support.pin_env import handle_of
from tests.support.pinutild import PYTHON, ROOT, start_pinutild
from tests.support.tpm_gate import gated_tpm
from tests.support.tpm_proxy import CC_NV_READ_PUBLIC

FLOOD = 16  # the per-uid connection cap

# One request (argv[3], JSON), then (on a line from stdin) argv[2] - 1 more, each on
# its own connection; "sent" once all are written; then every reply's result.
_FLOODER = """
import json, socket, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import protocol
frame = protocol.encode(json.loads(sys.argv[3]))
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


def flooder(service, requests: int, request: dict, as_user=()) -> subprocess.Popen:
    return subprocess.Popen([*as_user, PYTHON, "-I", "-c", _FLOODER, service.socket,
                             str(requests), json.dumps(request)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd="/",
                            env={"PATH": "/usr/bin:/bin"})


def barrier(path: str) -> None:
    """Returns once the service has read every request sent before: a malformed one,
    answered by the event loop itself (the worker is held), on a connection made after
    them (accepted after them, read in the same turn of the loop or a later one)."""
    reply = client.call(path, {"verb": "no-such-verb"}, 30)
    assert reply["result"] == "bad_request"


def test_one_uids_queued_flood_does_not_hold_up_another_uids_login(pin_env):
    proxy, gate = gated_tpm(pin_env)
    service = start_pinutild(pin_env, "--tpm-timeout", "120", "--request-timeout", "120")
    flood = flooder(service, FLOOD, {"verb": "pin-status", "user": "nobody"}, AS_NOBODY)
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


def test_a_root_host_acting_for_a_user_takes_that_users_turn_and_cap(pin_env):
    """A root client acting for nobody (polkit's socket-activated agent helper, driven
    by any local user's agent, says `on_behalf_of`) counts as nobody from its request
    on (review G8): its queued requests take nobody's turn, not root's, where root's
    own logins wait in order, and nobody's cap of 16 connections applies (the 17th is
    answered "busy" at once). On the old code all 17 were queued in root's turn, none
    refused, and root's own request came after them all."""
    proxy, gate = gated_tpm(pin_env)
    service = start_pinutild(pin_env, "--tpm-timeout", "120", "--request-timeout", "120")
    flood = flooder(service, FLOOD + 1, {"verb": "pin-status", "user": "nobody",
                                         "on_behalf_of": 65534})
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
        barrier(service.socket)  # root's own request is queued behind the flood's
        gate.open()
        waiting.join()
        assert login[0]["result"] == "success", login
        results = [flood.stdout.readline() for _ in range(FLOOD + 1)]
        assert results == ["success\n"] * FLOOD + ["tpm_unavailable\n"], results
        read = [int.from_bytes(e.command[10:14], "big") for e in proxy.exchanges
                if e.code == CC_NV_READ_PUBLIC]
        per_request = read.count(handle_of("root"))
        assert per_request >= 1 and read.count(handle_of("nobody")) == FLOOD * per_request
        before = read[:read.index(handle_of("root"))].count(handle_of("nobody"))
        assert before <= 2 * per_request, read  # in turns, as any other uid's flood
    finally:
        gate.open()
        flood.kill()
        flood.wait()
        service.stop()
        proxy.stop()
