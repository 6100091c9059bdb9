"""pinutild's event loop: every client on one thread, the TPM in one worker process.

Why this shape: every client is untrusted and may be slow, huge, truncated, garbage or
one of hundreds. The server reads and writes all connections non-blocking through one
selector, so no client can hold it; each connection has a deadline for its whole
request (a slow-loris is cut off when it expires, however it trickles), a size limit
read from its header before any body byte is kept, and a per-uid and a global cap on
open connections (beyond them a connection is closed at once: one user's flood cannot
take the slots of others; root, trusted anyway, has only the global cap), and a smaller
cap on those waiting at a prompt (conversation.py), so that logins parked while a
person types never take the places of those doing TPM work. Only a
complete, well-formed request reaches the TPM worker (worker.py), one at a time: TPM
access is serialised, and this process never opens the TPM. Waiting requests take
turns per caller uid (fairqueue.py), so one uid's queued requests cannot hold up
another uid's login. After repeated wrong PINs for a user, a PIN check for them that
comes too early is answered with `throttled` (throttle.py): never sent to the TPM,
it delays nobody (root's, whose name only the worker resolves, is refused there). So
is any request that could write to the PIN index of an account whose budget of TPM
NV writes is spent (nv_budget.py: wrong PINs, resets, changes, setups, deletes). A
root client acting for a user (`on_behalf_of`) counts as that user for all of it, the
per-uid cap and the queue's turns included, from its request on.

An exception while handling one event (a bug, or a fault nobody foresaw) is logged
and ends only that connection (its client reads EOF: no answer, never success); the
loop and every other client go on.

A hung TPM: a request waits at most `tpm_seconds`; then it gets `tpm_unavailable`, the
worker is killed (a request not yet started never runs: its PIN is not sent late),
and the breaker opens: every request gets `tpm_unavailable` at once while a fresh
worker asks the TPM a harmless question (`tpm-probe`), again every `probe_seconds`
until it answers; then the breaker closes. So a hung TPM costs one login the timeout,
not every login, and the service recovers by itself as soon as the TPM answers.

Without connections for `idle_exit` seconds (socket activation) the loop returns; a
connection that arrives meanwhile waits in the listening socket for the next start.

The prompts of pin-setup and pin-login are conversation.py's (a mixin of Server); what
the loop keeps per connection and per request is connection.py's. The server is
single-threaded on purpose: it forks its worker, and a fork from a
threaded process inherits locks that no thread will ever release.
"""
from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import traceback
from time import monotonic

from pinutil.service import nv_budget, peer, protocol, prover, verbs
from pinutil.service.connection import (
    READING,
    WORKING,
    WRITING,
    Connection,
    Job,
    count_one_less,
    frame,
    unavailable,
)
from pinutil.service.conversation import ASKS_BACK, Conversations
from pinutil.service.fairqueue import FairQueue
from pinutil.service.nv_budget import WRITES_PER_HOUR, NvBudget
from pinutil.service.throttle import IN_A_ROW, MAX_DELAY, Throttle, refusal
from pinutil.service.worker import PROBE, TARGET_UID, Worker, WorkerGone
from pinutil.users import ROOT_UID, SERVICE_USER, User

#: How long a pin-login's PIN prompt waits for its answer: a person at a login or
#: unlock screen (sudo gives up after 5 minutes too). Then the connection closes and
#: nothing was sent to the TPM; the client's late answer gets no verdict (its module
#: returns PAM_AUTHINFO_UNAVAIL, and the stack goes on to the password).
LOGIN_ANSWER_SECONDS = 300.0

#: How many connections may wait at a prompt at once (pin-login's PIN, pin-setup's proof
#: and new PIN), of all callers, and of one caller other than root (conversation.py).
MAX_PROMPTS = 64
MAX_PROMPTS_PER_UID = 4


class Limits:
    """The service's bounds; the defaults are the documented ones (docs/pinutild.md)."""

    __slots__ = ("idle_exit", "max_connections", "max_per_uid", "max_prompts",
                 "max_prompts_per_uid", "max_proofs_per_uid", "nv_writes_per_hour",
                 "pin_delay_max", "pin_prompt_seconds", "probe_seconds", "request_seconds",
                 "tpm_seconds")

    def __init__(self, request_seconds: float = 5.0, tpm_seconds: float = 3.0,
                 max_connections: int = 256, max_per_uid: int = 16,
                 idle_exit: float = 0.0, probe_seconds: float = 1.0,
                 pin_delay_max: float = MAX_DELAY, max_proofs_per_uid: int = 1,
                 pin_prompt_seconds: float = LOGIN_ANSWER_SECONDS,
                 max_prompts: int = MAX_PROMPTS,
                 max_prompts_per_uid: int = MAX_PROMPTS_PER_UID,
                 nv_writes_per_hour: int = WRITES_PER_HOUR) -> None:
        self.request_seconds = request_seconds  # whole request, then whole reply
        self.tpm_seconds = tpm_seconds  # one request's wait for the TPM worker
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        # Password proofs at once per uid: each holds a root process (one of the proof
        # socket's MaxConnections) until the user answers; one user must not hold them
        # all (review F7), and nobody needs two enrolments at once.
        self.max_proofs_per_uid = max_proofs_per_uid
        self.idle_exit = idle_exit  # 0: never
        self.probe_seconds = probe_seconds  # between probes while the breaker is open
        self.pin_delay_max = pin_delay_max  # the per-user delay's cap (0: none)
        self.pin_prompt_seconds = pin_prompt_seconds  # a login's wait for its PIN
        # Connections waiting at a prompt hold their place while a person types; their
        # own cap keeps the rest of max_connections for TPM work (review PL4).
        self.max_prompts = max_prompts
        self.max_prompts_per_uid = max_prompts_per_uid  # root's: only max_prompts
        self.nv_writes_per_hour = nv_writes_per_hour  # each account's NV budget (0: none)


_SERVICE = User(SERVICE_USER, -1)  # the caller of the breaker's probes
#: The verbs that may write to a PIN index (NV): what they wrote is charged to its
#: account's budget (nv_budget.py). While that budget is spent they are refused, and
#: pin-login too, before its prompt (no PIN asked for in vain).
WRITES_NV = verbs.TRIES_A_PIN | {verbs.SETUP}
NV_BUDGETED = WRITES_NV | {verbs.LOGIN}
#: The field holding the PIN a verb tries (a change's and a delete's only when given).
_PIN_TRIED = {"pin-check": "pin", "pin-change": "old_pin", "pin-delete": "pin"}
#: The NV writes of a verb that defines, replaces or undefines the index.
_REPLACES = {verbs.SETUP: nv_budget.SETUP, "pin-change": nv_budget.CHANGE,
             "pin-delete": nv_budget.DELETE}


class Server(Conversations):
    """Serve `listener` (a bound, listening unix stream socket) until idle or stopped."""

    def __init__(self, listener: socket.socket, policy_path: str,
                 limits: Limits | None = None, proof_socket: str | None = None) -> None:
        self.listener = listener
        self.proof_socket = proof_socket  # None: a forked child proves (root only)
        self.limits = limits or Limits()
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self.per_uid: dict[int, int] = {}
        self.proofs_per_uid: dict[int, int] = {}  # running password proofs
        self.at_prompt: set[Connection] = set()  # pin-login/pin-setup before their answer
        self.worker = Worker(policy_path)
        self.jobs = FairQueue()  # waiting for the worker, in turns per uid
        self.throttle = Throttle(self.limits.pin_delay_max)  # delays after wrong PINs
        self.budget = NvBudget(self.limits.nv_writes_per_hour)  # NV writes per account
        self.current: Job | None = None  # with the worker now
        self.breaker_open = False
        self.next_probe = 0.0
        self._stopping = False
        self.last_activity = monotonic()

    # -- the main loop ----------------------------------------------------------------
    def serve(self) -> None:
        self.listen()
        try:
            while not self._stopping:
                self.turn(self._timeout())
                if self._idle():
                    return
        finally:
            if self.worker.running:  # the worker leaves by itself: no TPM session stays
                self.selector.unregister(self.worker.from_child)
                self.worker.stop()
            for conn in self.connections.values():  # a forked prover ends with us
                if conn.proof is not None:
                    conn.proof.close()

    def listen(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")

    def turn(self, timeout: float | None) -> None:
        """One turn of the loop: wait at most `timeout` for events, handle them, then
        expire, dispatch and reap (the fuzz target, tests/fuzz/targets.py, drives the
        loop turn by turn)."""
        for key, _ in self.selector.select(timeout):
            try:
                self._handle(key.data)
            except Exception:  # noqa: BLE001 - contained: see _contain
                self._contain(key.data)
        self._expire()
        self._dispatch()
        self.worker.reap()
        prover.reap()

    def _handle(self, data) -> None:
        if data == "listener":
            self._accept()
        elif data == "worker":
            self._from_worker()
        elif isinstance(data, prover.Proof):
            self._from_proof(data)
        elif data.state == READING:
            self._read(data)
        elif data.state == WORKING:
            self._read_extra(data)
        else:
            self._write(data)

    def _contain(self, data) -> None:
        """An exception escaped the handling of one event: log it (the journal) and end
        only what it concerned. A connection is closed (its client reads EOF, which it
        takes as "unavailable"; a job of it still queued never runs); the worker is
        replaced and its client told; the listener just goes on."""
        traceback.print_exc(file=sys.stderr)
        if isinstance(data, prover.Proof):
            data = data.owner  # its connection goes, and the proof with it
        if isinstance(data, Connection):
            self._discard(data)
        elif data == "worker":
            job, self.current = self.current, None
            with contextlib.suppress(Exception):
                self._worker_failed(job, "the TPM worker failed")

    def stop(self) -> None:
        """Leave the loop at its next turn (from a signal handler)."""
        self._stopping = True

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self.connections.values()]
        if self.current is not None:
            deadlines.append(self.current.deadline)
        if self.breaker_open and self.current is None:
            deadlines.append(self.next_probe)
        if self.limits.idle_exit and not self.connections:
            deadlines.append(self._idle_until())
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - monotonic())

    def _idle_until(self) -> float:
        """When the service may exit for idleness: not while it remembers a user's
        wrong PINs or a budget that is not full (the restart would forget them)."""
        until = self.last_activity + self.limits.idle_exit
        kept = [t for t in (self.throttle.forget_at(), self.budget.full_at()) if t is not None]
        return max([until, *kept])

    def _idle(self) -> bool:
        return (bool(self.limits.idle_exit) and not self.connections
                and monotonic() >= self._idle_until())

    # -- connections ------------------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(64):  # then serve the others: an accept storm cannot starve them
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: drop this turn, never die
                print(f"pinutild: accept: {e.strerror}", file=sys.stderr)
                return
            self.last_activity = monotonic()
            try:
                caller = peer.caller_of(sock)
            except OSError:
                sock.close()
                continue
            uid = caller.uid
            if (len(self.connections) >= self.limits.max_connections
                    or (uid != ROOT_UID and self.per_uid.get(uid, 0) >= self.limits.max_per_uid)):
                sock.close()  # the client reads EOF: "no answer", never success
                continue
            sock.setblocking(False)
            conn = Connection(sock, caller, monotonic() + self.limits.request_seconds)
            self.connections[sock.fileno()] = conn
            self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
            self.selector.register(sock, selectors.EVENT_READ, conn)
            # A client sends its request right after connecting: read it now rather
            # than a turn of the loop later (nothing there yet: the selector waits).
            try:
                self._read(conn)
            except Exception:  # noqa: BLE001 - contained: see _contain
                self._contain(conn)

    def _close(self, conn: Connection) -> None:
        if self.connections.pop(conn.sock.fileno(), None) is None:
            return
        self.at_prompt.discard(conn)
        if conn.proof is not None:
            self._end_proof(conn)
        if conn.job is not None:
            conn.job.cancelled = True  # not started: never will be; started: reply dropped
        count_one_less(self.per_uid, conn.account)
        self.selector.unregister(conn.sock)
        conn.sock.close()
        self.last_activity = monotonic()

    def _discard(self, conn: Connection) -> None:
        """Close `conn` after an exception left it in any state: if `_close` fails
        part-way (it first forgets the connection), the socket is still unregistered
        and closed."""
        self.at_prompt.discard(conn)
        if conn.job is not None:
            conn.job.cancelled = True
        with contextlib.suppress(Exception):
            self._close(conn)
            return
        with contextlib.suppress(Exception):
            self.selector.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: Connection) -> None:
        while True:  # the header, then at once the body it announces (if it is there)
            try:
                data = conn.sock.recv(conn.need - len(conn.buffer))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            if not data:  # closed before a whole request: nothing to answer
                self._close(conn)
                return
            conn.buffer += data
            if len(conn.buffer) < conn.need:
                return
            if conn.need != protocol.HEADER_SIZE:
                break
            try:
                conn.need += protocol.body_length(bytes(conn.buffer))
            except protocol.ProtocolError as e:
                self._reply(conn, frame({"result": "bad_request", "error": str(e)}))
                return
        answered = conn.pending is not None
        try:
            request = protocol.decode_body(bytes(conn.buffer[protocol.HEADER_SIZE:]))
            if not answered:
                verbs.parse_request(request)
            else:  # the answer to our prompt completes the pending request
                request = verbs.with_answer(conn.pending, request, conn.proven)
        except (protocol.ProtocolError, verbs.BadRequest) as e:
            self._reply(conn, frame({"result": "bad_request", "error": str(e)}))
            return
        finally:
            if len(conn.buffer) == conn.need > protocol.HEADER_SIZE:
                conn.buffer[:] = bytes(len(conn.buffer))  # the PIN, wiped as far as we can
        if not answered and not self._counted_as_who_it_acts_for(conn, request):
            return
        if answered:  # past its prompt: what is left is TPM work
            self.at_prompt.discard(conn)
        elif (request["verb"] == verbs.SETUP
              and self._refused_as_too_early(conn, verbs.SETUP, request)):
            return  # before its prompts: the account's budget of TPM writes is spent
        elif request["verb"] in ASKS_BACK and not self._take_prompt_place(conn):
            return
        if not answered and request["verb"] == verbs.SETUP:
            self._begin_setup(conn, request)
            return
        conn.pending = None
        self._submit(conn, request)

    def _read_extra(self, conn: Connection) -> None:
        """Readable while its request waits for the TPM: the client left (its job then
        never starts: no PIN is sent for a caller that gave up) or sent more than its
        one request (read and dropped)."""
        try:
            data = conn.sock.recv(protocol.MAX_BODY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)

    def _reply(self, conn: Connection, frame: bytes) -> None:
        if conn.job is not None:
            conn.job.cancelled = True  # answered now: a queued job must never run later
        conn.job = None
        conn.pending = None  # a final answer: no prompt follows
        self.at_prompt.discard(conn)
        conn.state = WRITING
        conn.reply = frame
        conn.deadline = monotonic() + self.limits.request_seconds
        self._write(conn)  # a reply fits the socket's buffer: usually sent and closed now
        if conn.reply and self.connections.get(conn.sock.fileno()) is conn:
            self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)  # the rest later

    def _write(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.reply)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.reply = conn.reply[sent:]
        if conn.reply:
            return
        if conn.pending is not None:  # a prompt went out: now its answer
            self._await_answer(conn)
        else:
            self._close(conn)

    def _expire(self) -> None:
        now = monotonic()
        if self.current is not None and self.current.deadline <= now:
            self._trip(f"the TPM did not answer within {self.limits.tpm_seconds:g} s")
        for conn in [c for c in self.connections.values() if c.deadline <= now]:
            try:
                if conn.state == WORKING:  # still queued behind slow (not hung) requests
                    self._reply(conn, unavailable(
                        f"pinutild is busy: the request waited {self.limits.tpm_seconds:g} "
                        "s behind others and was not sent to the TPM"))
                else:
                    self._close(conn)  # too slow to send its request or read its reply
            except Exception:  # noqa: BLE001 - contained: see _contain
                self._contain(conn)

    # -- the TPM worker and the breaker ------------------------------------------------
    def _submit(self, conn: Connection, request: dict) -> None:
        if self._refused_as_too_early(conn, request["verb"], request):
            return
        if self.breaker_open:  # no wait behind a hung TPM
            self._reply(conn, unavailable("the TPM is not answering (pinutild is "
                                           "probing it)"))
            return
        fields = {k: v for k, v in request.items() if k != "verb"}
        conn.job = Job(conn, request["verb"], fields)
        conn.state = WORKING
        conn.deadline = monotonic() + self.limits.tpm_seconds  # its wait in the queue
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self.jobs.push(conn.account, conn.job)  # its turn: the uid it acts for

    def _dispatch(self) -> None:
        """Give the idle worker its next job: the breaker's probe, or a client's."""
        if self.current is not None:
            return
        job = None
        if self.breaker_open:
            if monotonic() >= self.next_probe:
                job = Job(None, PROBE, {})
        else:
            job = self.jobs.pop()
            # Wrong PINs answered while this one waited may have made it too early.
            while job is not None and self._refused_as_too_early(job.connection, job.verb,
                                                                  job.fields):
                job = self.jobs.pop()
        if job is None:
            return
        if not self.worker.running:
            self.worker.start()
            self.selector.register(self.worker.from_child, selectors.EVENT_READ, "worker")
        caller = _SERVICE if job.connection is None else job.connection.caller
        # The TPM's time for this job starts now. A deadline set when it was queued
        # let jobs that merely waited behind others trip the breaker and kill a check
        # in progress (one user's 16 queued requests on a slow TPM did it).
        job.deadline = monotonic() + self.limits.tpm_seconds
        if job.connection is not None:
            job.connection.deadline = job.deadline
        # Root's PIN check names its account, which only the worker resolves (never
        # this loop: review F14); it refuses the check if that account must wait.
        holds = self.holds() if job.verb in verbs.THROTTLED and caller.is_root else {}
        try:
            self.worker.send(job.verb, caller, job.fields, holds)
        except WorkerGone:
            self._worker_failed(job, "the TPM worker is gone")
            return
        self.current = job

    def _from_worker(self) -> None:
        job = self.current
        try:
            reply = self.worker.receive()
        except (WorkerGone, ValueError, EOFError, TypeError) as e:
            self.current = None
            self._worker_failed(job, str(e) or "the TPM worker failed")
            return
        if reply is None:
            return
        self.current = None
        if job is None:
            return
        target_uid = reply.pop(TARGET_UID, None)
        if job.verb in verbs.TRIES_A_PIN:  # counted even if its client has left: the TPM did
            self._count_pin_check(job, reply, target_uid)
        if job.verb in WRITES_NV:
            self._count_nv_writes(job, reply, target_uid)
        if job.connection is None:  # the probe
            if reply.get("result") == "success":
                self.breaker_open = False
            else:
                self.next_probe = monotonic() + self.limits.probe_seconds
            return
        conn = job.connection
        if job.cancelled or conn.job is not job:
            return
        if job.verb == verbs.LOGIN and reply.get("result") == "success":
            self._ask_for_pin(conn, job, reply)
            return
        self._reply(conn, frame(reply))

    # -- the per-user delay (throttle.py) and NV budget (nv_budget.py) -----------------
    @staticmethod
    def _acts_for(conn: Connection, fields: dict) -> int:
        """The uid a request counts under: the one a root client says it acts for
        (`on_behalf_of`: polkit's socket-activated agent helper acts for any local
        user's agent), else the caller's own."""
        if conn.caller.is_root and "on_behalf_of" in fields:
            return fields["on_behalf_of"]
        return conn.caller.uid

    def _counted_as_who_it_acts_for(self, conn: Connection, request: dict) -> bool:
        """From its request on, a root client acting for a uid counts as that uid
        (review G8): against its cap of connections and in its turn of the queue, not
        in root's (which has no cap, and holds every root login). False, and answered
        "busy" like a full queue, when that uid has its cap of connections already."""
        uid = self._acts_for(conn, request)
        if uid == conn.account:
            return True
        if uid != ROOT_UID and self.per_uid.get(uid, 0) >= self.limits.max_per_uid:
            self._reply(conn, unavailable(f"pinutild is busy: uid {uid} has "
                                          f"{self.limits.max_per_uid} requests open"))
            return False
        count_one_less(self.per_uid, conn.account)
        conn.account = uid
        self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
        return True

    def _refused_as_too_early(self, conn: Connection, verb: str, fields: dict) -> bool:
        """Answer with `throttled` (no TPM command, no attempt spent) a PIN check that
        comes too soon after the user's wrong PINs in a row, or any request that could
        write to the PIN index of an account whose NV budget is spent; False if it may
        go on."""
        if verb not in NV_BUDGETED:
            return False
        uid = self._acts_for(conn, fields)  # only their own PIN (users.acting_for)
        if uid == ROOT_UID:
            # Root's: the worker's to refuse, for the account it resolves (_dispatch
            # sends it the holds). Root's pin-setup, an administrator's, waits for
            # neither (and root's `pinutil` goes to the TPM directly anyway).
            return False
        delay = self.throttle.wait_left(uid) if verb in verbs.THROTTLED else 0
        budget = self.budget.wait_left(uid)
        if not (delay or budget):
            return False
        answer = refusal(delay, IN_A_ROW) if delay >= budget else nv_budget.refusal(budget)
        self._reply(conn, frame(answer.json_fields()))
        return True

    def holds(self) -> dict[int, int]:
        """The accounts that root's requests may not reach the TPM for yet: uid ->
        seconds, the longer of the delay's and the NV budget's wait."""
        holds = self.throttle.holds()
        for uid, wait in self.budget.holds().items():
            holds[uid] = max(wait, holds.get(uid, 0))
        return holds

    def _count_pin_check(self, job: Job, reply: dict, target_uid: int | None) -> None:
        result, attempts_left = reply.get("result"), reply.get("attempts_left")
        if target_uid is None and not job.connection.caller.is_root:
            target_uid = job.connection.caller.uid  # its own PIN: the only one it may check
        if target_uid is None:
            return
        if result == "wrong_pin" and attempts_left != 0:
            self.throttle.failed(target_uid)
        elif result in ("success", "wrong_pin"):  # right, or now locked by the TPM
            self.throttle.end(target_uid)

    def _count_nv_writes(self, job: Job, reply: dict, target_uid: int | None) -> None:
        """Charge what the request wrote to its account's NV budget."""
        if target_uid is None and not job.connection.caller.is_root:
            target_uid = job.connection.caller.uid  # its own index: the only one it may write
        if target_uid is None:
            return  # root's setup: its name only the worker resolved (never budgeted)
        result = reply.get("result")
        if result == "wrong_pin":
            self.budget.wrong_pin(target_uid)
        elif result == "success":
            if _PIN_TRIED.get(job.verb) in job.fields:  # right: pinCount back to 0
                self.budget.right_pin(target_uid)
            if job.verb in _REPLACES:
                self.budget.replaced(target_uid, _REPLACES[job.verb])

    def _worker_failed(self, job: Job | None, why: str) -> None:
        """The worker died or its pipe broke: replace it; the job's client is told."""
        self._stop_worker()
        if job is not None and job.connection is not None and job.connection.job is job:
            self._reply(job.connection, unavailable(why))

    def _trip(self, why: str) -> None:
        """The current job hung: kill the worker, answer every waiting client, open the
        breaker (and probe at once)."""
        job, self.current = self.current, None
        self._stop_worker()
        self.breaker_open = True
        self.next_probe = monotonic() if job.connection is not None else (
            monotonic() + self.limits.probe_seconds)
        waiting = [job, *self.jobs.drain()]
        for each in waiting:
            conn = each.connection
            if conn is not None and not each.cancelled and conn.job is each:
                self._reply(conn, unavailable(why))

    def _stop_worker(self) -> None:
        if self.worker.running:
            self.selector.unregister(self.worker.from_child)
            self.worker.kill()
