"""pinutild's event loop (pinutil/service/server.py) driven turn by turn by fuzzer bytes.

Each input is a script for up to 8 clients of one in-process `Server`: connect (as
root or one of two users), send a whole frame (valid, mutated or cut), send raw
bytes, half-close, close, read, let the loop take a turn, move the clock (deadlines,
the breaker, the per-user delay) or hold and release the TPM worker. The sockets are
real (an abstract unix socket, non-blocking clients); the TPM worker is a stand-in
with the real one's interface (no TPM, no fork) that answers each job at once, or
holds them while the script says the TPM hangs; the clock is a fake one.

Checked all along: no exception escapes the handling of an event (the server's
containment is turned into a crash here: a contained exception is still a bug), the
connection counts add up, every reply is one well-formed frame with a known result
and at most one per connection, and no PIN check reaches the worker while its user
must wait (the per-user delay). Checked at the end: once every client has gone and
every deadline has passed, the server holds no connection (nothing leaks or stalls).
"""
from __future__ import annotations

import collections
import itertools
import os
import socket

from pinutil import errors
from pinutil.service import protocol, server, throttle
from pinutil.service.worker import PROBE, TARGET_UID
from pinutil.users import User

MAX_CLIENTS = 8
UIDS = (0, 1000, 1001)
ACCOUNT = 1000  # every name's account, as the fake worker resolves it
RESULTS = {"success", "bad_request"} | {cls.token for cls in errors.VOCABULARY}
TEMPLATES = [protocol.encode(fields) for fields in (
    {"verb": "pin-check", "user": "alice", "pin": b"1234"},
    {"verb": "pin-check", "user": "alice", "pin": b"9999"},
    {"verb": "pin-check", "user": "root", "pin": b"9999"},
    {"verb": "pin-status", "user": "alice"},
    {"verb": "master-key-token", "user": "alice"},
    {"verb": "no-such-verb"},
)]
_names = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


class FakeWorker:
    """worker.Worker's interface without a TPM: each job's reply is ready at once
    (readable on `from_child`, as a real reply would be), unless `stuck`."""

    def __init__(self, throttle) -> None:
        self.throttle = throttle  # the server's: a check it says must wait never comes
        self.pid = 0
        self.from_child = self._to_parent = -1
        self.stuck = False
        self.signalled = False  # the pipe holds the byte that says "a reply is ready"
        self.replies: list[dict] = []

    @property
    def running(self) -> bool:
        return self.pid != 0

    def start(self) -> None:
        self.from_child, self._to_parent = os.pipe()
        os.set_blocking(self.from_child, False)
        self.pid, self.replies, self.signalled = 1, [], False

    def send(self, verb: str, caller: User, fields: dict, holds: dict | None = None) -> None:
        assert self.running and not self.replies, "a job sent to a busy worker"
        if verb == "pin-check" and caller.uid == 0:  # its name: the worker resolves it
            assert holds == self.throttle.holds(), "root's check without the holds"
            if ACCOUNT in holds:  # the real worker's refusal, before the TPM
                self.replies.append(throttle.refusal(holds[ACCOUNT]).json_fields())
                self.release()
                return
        assert verb != "pin-check" or caller.uid == 0 or not self.throttle.wait_left(
            caller.uid), "a PIN check sent to the TPM while its user must wait"
        self.replies.append(self._answer(verb, fields))
        self.release()

    def release(self) -> None:
        if self.running and self.replies and not self.stuck and not self.signalled:
            os.write(self._to_parent, b"x")
            self.signalled = True

    def receive(self) -> dict | None:
        try:
            os.read(self.from_child, 1)
        except BlockingIOError:
            return None
        self.signalled = False
        return self.replies.pop(0)

    def kill(self) -> None:
        if self.running:
            os.close(self.from_child)
            os.close(self._to_parent)
        self.pid, self.replies = 0, []

    def reap(self) -> None:
        pass

    @staticmethod
    def _answer(verb: str, fields: dict) -> dict:
        if verb == PROBE:
            return {"result": "success"}
        if verb == "pin-check":
            if fields["pin"] == b"1234":
                return {"result": "success", TARGET_UID: ACCOUNT}
            return {"result": "wrong_pin", "error": "Incorrect PIN", "attempts_left": 3,
                    TARGET_UID: ACCOUNT}
        return {"result": "success", "enrolled": False}


class StrictServer(server.Server):
    def _contain(self, data) -> None:
        raise  # noqa: PLE0704 - called in an except block: the fuzzer sees the bug


class Script:
    """The fuzzer's bytes, read one op at a time."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise EOFError
        self.at += 1
        return self.data[self.at - 1]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk


def run(data: bytes) -> None:
    """One script (see the module docstring). Patches the server module's clock and
    peer lookup: call it only in a fuzzing process (tests/fuzz/run.py)."""
    CLOCK.now = 1000.0
    server.monotonic = CLOCK  # the loop's deadlines
    address = f"\0pypam-fuzz-{os.getpid()}-{next(_names)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    arriving: collections.deque[int] = collections.deque()  # uids, in connect order
    server.peer.caller_of = lambda sock: User(f"uid {arriving[0]}", arriving.popleft())
    limits = server.Limits(max_connections=6, max_per_uid=3)
    service = StrictServer(listener, "/nonexistent/policy", limits)
    service.throttle.clock = CLOCK
    service.worker = worker = FakeWorker(service.throttle)
    service.listen()
    clients: list[socket.socket] = []
    received: dict[socket.socket, bytes] = {}
    try:
        script = Script(data)
        try:
            while True:
                _step(script, service, worker, address, arriving, clients, received)
                _check_counts(service)
        except EOFError:
            pass
        for client in clients:  # everyone leaves; every deadline passes
            client.close()
        worker.stuck = False
        worker.release()
        for _ in range(4):
            CLOCK.now += 100
            service.turn(0)
        assert not service.connections, "connections left after every client went"
    finally:
        for client in clients:
            client.close()
        for conn in list(service.connections.values()):
            conn.sock.close()
        worker.kill()
        service.selector.close()
        listener.close()


def _step(script, service, worker, address, arriving, clients, received) -> None:
    op = script.byte() % 9
    if op == 0:
        uid = UIDS[script.byte() % len(UIDS)]
        if len(clients) < MAX_CLIENTS:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            client.connect(address)
            arriving.append(uid)
            clients.append(client)
            received[client] = b""
        return
    if op == 5:
        service.turn(0)
        return
    if op == 6:
        CLOCK.now += script.byte() / 10
        return
    if op == 7:
        worker.stuck = not worker.stuck
        worker.release()
        return
    if not clients:
        return
    client = clients[script.byte() % len(clients)]
    if op in (1, 2):
        frame = TEMPLATES[script.byte() % len(TEMPLATES)] if op == 1 else b""
        frame = frame[:script.byte() * 2] + script.take(script.byte() % 32)
        _quietly(client.send, frame)
    elif op == 3:
        clients.remove(client)
        client.close()
    elif op == 4:
        _quietly(client.shutdown, socket.SHUT_WR)
    else:
        _read(client, received)


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except OSError:  # full, or the service has closed it: what a client may meet
        pass


def _read(client: socket.socket, received: dict) -> None:
    try:
        chunk = client.recv(65536)
    except (BlockingIOError, ConnectionResetError):
        return
    data = received[client] = received[client] + chunk
    if len(data) < protocol.HEADER_SIZE:
        return
    size = protocol.HEADER_SIZE + protocol.body_length(data[:protocol.HEADER_SIZE])
    assert len(data) <= size, "more than one reply on a connection"
    if len(data) == size:
        reply = protocol.decode_frame(data)
        assert reply.get("result") in RESULTS, reply
        assert TARGET_UID not in reply


def _check_counts(service) -> None:
    assert sum(service.per_uid.values()) == len(service.connections)
    assert all(n > 0 for n in service.per_uid.values())
    assert service.current is None or service.worker.running
