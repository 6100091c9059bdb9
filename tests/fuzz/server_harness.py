"""pinutild's event loop (pinutil/service/server.py) driven turn by turn by fuzzer bytes.

Each input is a script for up to 8 clients of one in-process `Server`: connect (as
root or one of two users), send a whole frame (valid, mutated or cut: requests,
pin-login and pin-setup among them, and answers to their prompts), send raw bytes,
half-close, close, read, let the loop take a turn, move the clock (deadlines, the
prompt's wait, the breaker, the per-user delay) or hold and release the TPM worker.
The sockets are real (an abstract unix socket, non-blocking clients); the TPM worker
is a stand-in with the real one's interface (no TPM, no fork) that answers each job at
once, or holds them while the script says the TPM hangs: a pin-login's status with
the prompt `{result: success, prompt}`, a PIN check `success` for 1234 only. A
password proof is refused (as by a service without a proof process), so root's
pin-setup is the setup conversation reached. The clock is a fake one.

Checked all along: no exception escapes the handling of an event (the server's
containment is turned into a crash here: a contained exception is still a bug), the
connection counts add up, the connections at a prompt are open ones within their caps,
and no PIN check reaches the worker while its user must wait (the per-user delay,
the NV budget). Per
connection (each has a caller of its own, so the worker knows whose job it runs): the
worker gets at most one pin-login and at most one job that tries a PIN, the PIN check
of a pin-login is its own user's; the client gets prompt frames and then at most one
reply with a known result, nothing after it, at most one prompt; and every `success`
it gets is a worker's reply to one of its own jobs, given once: never a pin-login's
status, and after a PIN prompt only the check of the right PIN. Checked at the end:
once every client has gone and every deadline has passed, the server holds no
connection and no place at a prompt (nothing leaks or stalls).
"""
from __future__ import annotations

import collections
import itertools
import os
import socket

from pinutil import errors
from pinutil.service import conversation, protocol, server, throttle, verbs
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
    {"verb": "pin-check", "user": "alice", "pin": b"9999", "on_behalf_of": 1000},
    {"verb": "pin-status", "user": "alice", "on_behalf_of": 1001},
    {"verb": "pin-status", "user": "alice"},
    {"verb": "master-key-token", "user": "alice"},
    {"verb": "no-such-verb"},
    {"verb": "pin-login", "user": "alice"},
    {"verb": "pin-login", "user": "root", "on_behalf_of": ACCOUNT},
    {"answer": b"1234"},
    {"answer": b"9999"},
    {"answer": "1234"},  # text, not bytes: a broken answer
    {"verb": "pin-setup", "user": "alice"},
)]
RIGHT_PIN = b"1234"
JOB = "fuzz_job"  # the serial the fake worker puts in each reply, for the checks
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

    def __init__(self, throttle, holds) -> None:
        self.throttle = throttle  # the server's: a check it says must wait never comes
        self.jobs: dict[str, list[tuple[str, dict]]] = {}  # per connection: what it sent
        self.given: dict[int, tuple[str, str, dict]] = {}  # reply serial: its job
        self.holds = holds  # the server's: the delay's and the NV budget's
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
        if verb != PROBE:
            self._one_login_one_pin(caller.name, verb, fields)
        if verb in verbs.THROTTLED and caller.uid == 0:  # its name: the worker resolves it
            assert holds == self.holds(), "root's check without the holds"
            if ACCOUNT in holds:  # the real worker's refusal, before the TPM
                self.replies.append(throttle.refusal(holds[ACCOUNT]).json_fields())
                self.release()
                return
        acting = fields.get("on_behalf_of", 0) if caller.uid == 0 else caller.uid
        assert verb not in verbs.THROTTLED or acting == 0 or acting not in self.holds(), (
            "a PIN check sent to the TPM while its user must wait")
        reply = self._answer(verb, fields)
        reply[JOB] = serial = len(self.given)
        self.given[serial] = (caller.name, verb, fields)
        self.replies.append(reply)
        self.release()

    def _one_login_one_pin(self, connection: str, verb: str, fields: dict) -> None:
        """What one connection may have the TPM do: one pin-login, one PIN tried."""
        sent = self.jobs.setdefault(connection, [])
        earlier = [v for v, _ in sent]
        if verb == verbs.LOGIN:
            assert not earlier, f"a pin-login after {earlier} on one connection"
        if verb in verbs.TRIES_A_PIN or verb == verbs.SETUP:
            assert not any(v in verbs.TRIES_A_PIN or v == verbs.SETUP for v in earlier), \
                f"a second PIN ({verb}) tried on one connection"
            if verbs.LOGIN in earlier:
                login = sent[earlier.index(verbs.LOGIN)][1]
                assert verb == "pin-check" and fields["user"] == login["user"], \
                    "a pin-login's answer became another request"
        sent.append((verb, fields))

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
        if verb == verbs.LOGIN:  # the status allows a PIN: the server prompts for it
            return {"result": "success", "prompt": "PIN: "}
        if verb == "pin-check":
            if fields["pin"] == RIGHT_PIN:
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
    server.monotonic = conversation.monotonic = CLOCK  # the loop's and the prompts' deadlines
    address = f"\0pypam-fuzz-{os.getpid()}-{next(_names)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    # Each connection's caller is a User of its own (its name: the client's), in
    # connect order: so the worker can tell whose job it runs.
    arriving: collections.deque[User] = collections.deque()
    server.peer.caller_of = lambda sock: arriving.popleft()
    server.prover.start = _no_proof
    limits = server.Limits(max_connections=6, max_per_uid=3, max_prompts=3,
                           max_prompts_per_uid=2, pin_prompt_seconds=30.0,
                           nv_writes_per_hour=20)
    service = StrictServer(listener, "/nonexistent/policy", limits)
    service.throttle.clock = service.budget.clock = CLOCK
    service.worker = worker = FakeWorker(service.throttle, service.holds)
    service.listen()
    clients: list[socket.socket] = []
    received: dict[socket.socket, Received] = {}
    try:
        script = Script(data)
        try:
            while True:
                _step(script, service, worker, address, arriving, clients, received)
                _check_counts(service)
        except EOFError:
            pass
        service.turn(0)  # what is on its way arrives, and is checked
        for client in clients:
            _read(client, received[client], worker)
        for client in clients:  # everyone leaves; every deadline passes
            client.close()
        worker.stuck = False
        worker.release()
        for _ in range(4):
            CLOCK.now += 100
            service.turn(0)
        assert not service.connections, "connections left after every client went"
        assert not service.at_prompt, "places at a prompt left after every client went"
    finally:
        for client in clients:
            client.close()
        for conn in list(service.connections.values()):
            conn.sock.close()
        worker.kill()
        service.selector.close()
        listener.close()


def _no_proof(*_args) -> None:
    """prover.start of a service without a proof process, not running as root."""
    raise errors.PermissionDenied("pinutild cannot check passwords (fuzzing)")


class Received:
    """What one client has read so far, and the name of its connection's caller."""

    __slots__ = ("data", "name")

    def __init__(self, name: str) -> None:
        self.name, self.data = name, b""


def _step(script, service, worker, address, arriving, clients, received) -> None:
    op = script.byte() % 9
    if op == 0:
        uid = UIDS[script.byte() % len(UIDS)]
        if len(clients) < MAX_CLIENTS:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            client.connect(address)
            name = f"client {next(_names)}"
            arriving.append(User(name, uid))
            clients.append(client)
            received[client] = Received(name)
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
        _read(client, received[client], worker)


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except OSError:  # full, or the service has closed it: what a client may meet
        pass


def _read(client: socket.socket, seen: Received, worker: FakeWorker) -> None:
    try:
        chunk = client.recv(65536)
    except (BlockingIOError, ConnectionResetError):
        return
    seen.data += chunk
    frames, rest = [], seen.data
    while len(rest) >= protocol.HEADER_SIZE:
        size = protocol.HEADER_SIZE + protocol.body_length(rest[:protocol.HEADER_SIZE])
        if len(rest) < size:
            break
        frames.append(protocol.decode_frame(rest[:size]))
        rest = rest[size:]
    prompts = [f for f in frames if "result" not in f]
    assert all(set(f) == {"prompt", "style"} for f in prompts), frames
    assert len(prompts) <= 1, f"a second prompt on one connection: {frames}"
    if len(prompts) == len(frames):
        return
    reply = frames[-1]
    assert "result" in reply and not rest, f"more after the reply: {frames} {rest!r}"
    assert frames[:-1] == prompts, f"more than one reply on a connection: {frames}"
    assert reply["result"] in RESULTS, reply
    assert TARGET_UID not in reply
    if reply["result"] == "success":
        _check_success(seen.name, reply, prompts, worker)


def _check_success(name: str, reply: dict, prompts: list[dict], worker: FakeWorker) -> None:
    """A `success` is the worker's reply to this connection's own job; a pin-login's
    only after its prompt, for the check of the right PIN."""
    assert JOB in reply, f"a success no worker gave: {reply}"
    owner, verb, fields = worker.given[reply[JOB]]
    assert owner == name, "another connection's reply"
    assert verb != verbs.LOGIN, "a pin-login's status given as its verdict"
    logins = [v for v, _ in worker.jobs.get(name, ()) if v == verbs.LOGIN]
    assert not logins or prompts, "a pin-login's success without its prompt"
    if prompts:
        expected = "pin-check" if prompts[0]["style"] == "echo_off" else verbs.SETUP
        assert verb == expected, f"{verb} answered a {prompts[0]['style']} prompt"
    if verb == "pin-check":
        assert fields["pin"] == RIGHT_PIN, "a success for a wrong PIN"


def _check_counts(service) -> None:
    assert sum(service.per_uid.values()) == len(service.connections)
    assert all(n > 0 for n in service.per_uid.values())
    waiting = service.at_prompt
    assert waiting <= set(service.connections.values()), "a closed connection at a prompt"
    assert len(waiting) <= service.limits.max_prompts
    for uid in {c.account for c in waiting} - {0}:
        assert sum(c.account == uid for c in waiting) <= service.limits.max_prompts_per_uid
    assert service.current is None or service.worker.running
