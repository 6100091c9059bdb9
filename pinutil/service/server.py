"""pinutild's event loop: many clients on one thread, the TPM on one worker thread.

Why this shape: every client is untrusted and may be slow, huge, truncated, garbage or
one of hundreds. The main thread reads and writes all connections non-blocking through
one selector, so no client can hold it; each connection has a deadline for its whole
request (a slow-loris is cut off when it expires, however it trickles), a size limit
read from its header before any body byte is kept, and a per-uid and a global cap on
open connections (beyond them a connection is closed at once: one user's flood cannot
take the slots of others; root, trusted anyway, has only the global cap). Only a complete, well-formed request reaches the TPM
worker, one at a time (the TPM is serialised: one connection, no session juggling).

A hung TPM blocks only the worker. The main loop answers a request that waited longer
than `tpm_seconds` with `tpm_unavailable` (a request not yet started is then never
started: its PIN is not sent late), and while the worker has been stuck for more than
`tpm_seconds` every new request gets that answer at once (the breaker), in
milliseconds instead of a timeout each.

Without connections for `idle_exit` seconds (socket activation) the loop returns; a
connection that arrives meanwhile waits in the listening socket for the next start.
"""
from __future__ import annotations

import os
import selectors
import socket
import sys
import threading
from collections import deque
from time import monotonic

from pinutil.service import peer, protocol, verbs
from pinutil.users import ROOT_UID, User


class Limits:
    """The service's bounds; the defaults are the documented ones (docs/pinutild.md)."""

    __slots__ = ("idle_exit", "max_connections", "max_per_uid", "request_seconds",
                 "tpm_seconds")

    def __init__(self, request_seconds: float = 5.0, tpm_seconds: float = 3.0,
                 max_connections: int = 256, max_per_uid: int = 16,
                 idle_exit: float = 0.0) -> None:
        self.request_seconds = request_seconds  # whole request, then whole reply
        self.tpm_seconds = tpm_seconds  # one request's wait for the TPM worker
        self.max_connections = max_connections
        self.max_per_uid = max_per_uid
        self.idle_exit = idle_exit  # 0: never


_READING, _WORKING, _WRITING = range(3)


class _Connection:
    __slots__ = ("buffer", "caller", "deadline", "job", "need", "reply", "sock", "state")

    def __init__(self, sock: socket.socket, caller: User, deadline: float) -> None:
        self.sock, self.caller, self.deadline = sock, caller, deadline
        self.buffer = bytearray()
        self.need = protocol.HEADER_SIZE
        self.state = _READING
        self.job = None
        self.reply = b""


class _Job:
    __slots__ = ("caller", "cancelled", "connection", "fields", "function", "reply", "started")

    def __init__(self, connection: _Connection, function, fields: dict) -> None:
        self.connection, self.function, self.fields = connection, function, fields
        self.caller = connection.caller
        self.cancelled = self.started = False
        self.reply = None


def _frame(fields: dict) -> bytes:
    return protocol.encode(fields)


def _unavailable(why: str) -> bytes:
    return _frame({"result": "tpm_unavailable", "error": why})


class Server:
    """Serve `listener` (a bound, listening unix stream socket) until idle or stopped."""

    def __init__(self, listener: socket.socket, policy_path: str,
                 limits: Limits | None = None) -> None:
        self.listener = listener
        self.policy_path = policy_path
        self.limits = limits or Limits()
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, _Connection] = {}
        self.per_uid: dict[int, int] = {}
        self._lock = threading.Lock()
        self._jobs: deque[_Job] = deque()
        self._job_ready = threading.Condition(self._lock)
        self._done: deque[_Job] = deque()
        self._worker_busy_since: float | None = None
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self.last_activity = monotonic()

    # -- the worker thread: the only code that touches the TPM -------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._jobs:
                    self._job_ready.wait()
                job = self._jobs.popleft()
                if job.cancelled:
                    continue
                job.started = True
                self._worker_busy_since = monotonic()
            reply = verbs.answer(job.function, self.policy_path, job.caller, job.fields)
            with self._lock:
                self._worker_busy_since = None
                job.reply = reply
                self._done.append(job)
            try:
                os.write(self._wake_write, b"!")
            except BlockingIOError:
                pass  # the loop is already due to wake up

    # -- the main loop ----------------------------------------------------------------
    def serve(self) -> None:
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, "listener")
        self.selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        threading.Thread(target=self._work, name="tpm-worker", daemon=True).start()
        while not self._stopping:
            for key, mask in self.selector.select(self._timeout()):
                if key.data == "listener":
                    self._accept()
                elif key.data == "wake":
                    self._collect()
                elif key.data.state == _READING:
                    self._read(key.data)
                elif key.data.state == _WORKING:
                    self._read_extra(key.data)
                else:
                    self._write(key.data)
            self._expire()
            if self._idle():
                return

    def stop(self) -> None:
        """Leave the loop at its next turn (from a signal handler or another thread)."""
        self._stopping = True
        try:
            os.write(self._wake_write, b"!")
        except OSError:
            pass

    def _timeout(self) -> float | None:
        deadlines = [c.deadline for c in self.connections.values()]
        if self.limits.idle_exit and not self.connections:
            deadlines.append(self.last_activity + self.limits.idle_exit)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - monotonic())

    def _idle(self) -> bool:
        return (bool(self.limits.idle_exit) and not self.connections
                and monotonic() - self.last_activity >= self.limits.idle_exit)

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
                caller = peer.caller_of(peer.peer_of(sock))
            except OSError:
                sock.close()
                continue
            uid = caller.uid
            if (len(self.connections) >= self.limits.max_connections
                    or (uid != ROOT_UID and self.per_uid.get(uid, 0) >= self.limits.max_per_uid)):
                sock.close()  # the client reads EOF: "no answer", never success
                continue
            sock.setblocking(False)
            conn = _Connection(sock, caller, monotonic() + self.limits.request_seconds)
            self.connections[sock.fileno()] = conn
            self.per_uid[uid] = self.per_uid.get(uid, 0) + 1
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Connection) -> None:
        fd = conn.sock.fileno()
        if self.connections.pop(fd, None) is None:
            return
        if conn.job is not None:
            with self._lock:
                conn.job.cancelled = True
        uid = conn.caller.uid
        if self.per_uid[uid] > 1:
            self.per_uid[uid] -= 1
        else:
            del self.per_uid[uid]
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self.last_activity = monotonic()

    def _read(self, conn: _Connection) -> None:
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
        try:
            if conn.need == protocol.HEADER_SIZE:
                conn.need += protocol.body_length(bytes(conn.buffer))
                return
            request = protocol.decode_body(bytes(conn.buffer[protocol.HEADER_SIZE:]))
            function, fields = verbs.parse_request(request)
        except (protocol.ProtocolError, verbs.BadRequest) as e:
            self._reply(conn, _frame({"result": "bad_request", "error": str(e)}))
            return
        finally:
            if len(conn.buffer) == conn.need and conn.need > protocol.HEADER_SIZE:
                conn.buffer[:] = bytes(len(conn.buffer))  # the PIN, wiped as far as we can
        self._submit(conn, function, fields)

    def _submit(self, conn: _Connection, function, fields: dict) -> None:
        now = monotonic()
        with self._lock:
            stuck = self._worker_busy_since
            if stuck is not None and now - stuck > self.limits.tpm_seconds:
                stuck_for = now - stuck
            else:
                stuck_for = None
                conn.job = _Job(conn, function, fields)
                self._jobs.append(conn.job)
                self._job_ready.notify()
        if stuck_for is not None:  # the breaker: no wait behind a hung TPM
            self._reply(conn, _unavailable(f"the TPM has not answered for {stuck_for:.1f} s"))
            return
        conn.state = _WORKING
        conn.deadline = now + self.limits.tpm_seconds
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _collect(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            done, self._done = self._done, deque()
        for job in done:
            conn = job.connection
            if conn.job is job and conn.state == _WORKING:
                conn.job = None
                self._reply(conn, _frame(job.reply))

    def _reply(self, conn: _Connection, frame: bytes) -> None:
        conn.state = _WRITING
        conn.reply = frame
        conn.deadline = monotonic() + self.limits.request_seconds
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.reply)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.reply = conn.reply[sent:]
        if not conn.reply:
            self._close(conn)

    def _read_extra(self, conn: _Connection) -> None:
        """Readable while its request is with the worker: the client left (its job, if
        not started, then never runs: no PIN is sent for a caller that gave up) or sent
        more than its one request (read and dropped)."""
        try:
            data = conn.sock.recv(protocol.MAX_BODY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)

    def _expire(self) -> None:
        now = monotonic()
        for conn in [c for c in self.connections.values() if c.deadline <= now]:
            if conn.state == _WORKING:
                with self._lock:
                    conn.job.cancelled = True
                conn.job = None
                self._reply(conn, _unavailable(
                    f"the TPM did not answer within {self.limits.tpm_seconds:g} s"))
            else:
                self._close(conn)  # too slow to send its request or read its reply
