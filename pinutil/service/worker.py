"""The TPM worker: the one child process of pinutild that opens the TPM.

Why a process and not a thread: tpm2-tss 3.2.1 cannot time out a synchronous call and
tcti-swtpm reads without a timeout, so a hung TPM blocks a call for as long as it
hangs. A thread stuck that way can be neither stopped nor replaced, and the service
would stay unable to check a PIN after the TPM came back. A process is killed at the
request's deadline and a fresh one forked (server.py's breaker decides when).

It is forked (no exec) by the server's single thread, keeps nothing of the server but
its two pipes and fds 0-2 (every client connection and the listening socket are
closed in it), and serves one request at a time for as long as it lives: the TPM
libraries are imported once, in the worker, never in the process that talks to
clients. Messages both ways are a u32 length and a `marshal` payload: both ends are
this code, and nothing a client sent reaches it but the decoded fields.
"""
from __future__ import annotations

import marshal
import os
import select
import signal
from time import monotonic, sleep

from pinutil import users
from pinutil.service import spare_session, throttle, verbs
from pinutil.users import User

_LENGTH = 4
MAX_MESSAGE = 64 * 1024
PROBE = "tpm-probe"  # not a client verb: the breaker's question "does the TPM answer?"
#: In a PIN check's reply (right or wrong PIN): the uid of the user whose PIN it was,
#: for the per-user delay (throttle.py). Not a protocol field name (those start with a
#: letter): the server takes it out, and a reply that kept it could not be framed.
TARGET_UID = "_target_uid"


class WorkerGone(Exception):
    """The worker died or closed its pipe before answering."""


class Worker:
    """The parent's handle on one worker process (start it, send, receive, kill)."""

    def __init__(self, policy_path: str) -> None:
        self.policy_path = policy_path
        self.pid = 0
        self.to_child = self.from_child = -1
        self._buffer = bytearray()
        self._zombies: list[int] = []

    @property
    def running(self) -> bool:
        return self.pid != 0

    def start(self) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            try:
                _close_all_but(request_read, reply_write)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _serve(request_read, reply_write, self.policy_path)
                code = 0
            finally:
                os._exit(code)
        os.close(request_read)
        os.close(reply_write)
        os.set_blocking(reply_read, False)
        self.pid, self.to_child, self.from_child = pid, request_write, reply_read
        self._buffer.clear()

    def send(self, verb: str, caller: User, fields: dict, holds: dict | None = None) -> None:
        """Hand one request to the idle worker (small: the pipe takes it at once).
        `holds`: for a PIN check, the accounts that must still wait (uid -> seconds,
        Throttle.holds): the worker refuses it if its user is one of them."""
        payload = marshal.dumps((verb, caller.name, caller.uid, fields, holds or {}))
        try:
            os.write(self.to_child, len(payload).to_bytes(_LENGTH, "big") + payload)
        except OSError:
            raise WorkerGone("the TPM worker is gone") from None

    def receive(self) -> dict | None:
        """The reply once it is complete (None: not yet); WorkerGone at EOF."""
        while True:
            try:
                chunk = os.read(self.from_child, MAX_MESSAGE)
            except BlockingIOError:
                return None
            if not chunk:
                raise WorkerGone("the TPM worker ended without an answer")
            self._buffer += chunk
            if len(self._buffer) >= _LENGTH:
                size = int.from_bytes(self._buffer[:_LENGTH], "big")
                if len(self._buffer) >= _LENGTH + size:
                    reply = marshal.loads(bytes(self._buffer[_LENGTH:_LENGTH + size]))
                    del self._buffer[:_LENGTH + size]
                    return reply

    def kill(self) -> None:
        """SIGKILL the worker (a hung TPM call) and forget it; reaped later, without
        waiting (a process in an uninterruptible device read dies when the read ends)."""
        if not self.running:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._zombies.append(self.pid)
        if self.to_child >= 0:  # stop() may have closed it already
            os.close(self.to_child)
        os.close(self.from_child)
        self.pid, self.to_child, self.from_child = 0, -1, -1
        self.reap()

    def stop(self, grace: float = 2.0) -> None:
        """Let the worker leave by itself (it reads the end of its requests, flushes its
        spare session and closes the TPM: spare_session.py); SIGKILL after `grace`
        seconds (a TPM call that hangs)."""
        if not self.running:
            return
        os.close(self.to_child)
        self.to_child = -1
        deadline = monotonic() + grace
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done = self.pid
            if done or monotonic() >= deadline:
                break
            sleep(0.002)
        if not done:
            self.kill()
            return
        os.close(self.from_child)
        self.pid, self.from_child = 0, -1

    def reap(self) -> None:
        for pid in list(self._zombies):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._zombies.remove(pid)


def _close_all_but(*keep: int) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _readable(fd: int, seconds: float) -> bool:
    return bool(select.select([fd], [], [], seconds)[0])


def _serve(request_fd: int, reply_fd: int, policy_path: str) -> None:
    """The worker's loop: one request, one reply, until the server closes the pipe.
    Idle, it keeps a spare salted session for the next PIN check (spare_session.py),
    flushed when it expires and before the worker leaves."""
    try:
        while True:
            if spare_session.held() and not _readable(request_fd,
                                                      spare_session.seconds_left()):
                verbs.expire_spare()
            header = _read_exactly(request_fd, _LENGTH)
            if header is None:
                return
            payload = _read_exactly(request_fd, int.from_bytes(header, "big"))
            if payload is None:
                return
            verb, name, uid, fields, holds = marshal.loads(payload)
            reply = _answer(policy_path, verb, User(name, uid), fields, holds)
            data = marshal.dumps(reply)
            os.write(reply_fd, len(data).to_bytes(_LENGTH, "big") + data)
            if not _readable(request_fd, 0):  # nobody waits: now is free time
                verbs.prepare_spare(policy_path)
    finally:
        verbs.leave()


def _answer(policy_path: str, verb: str, caller: User, fields: dict, holds: dict) -> dict:
    """One request's reply. A PIN check's user is resolved here, in the worker (NSS may
    be slow: never in the server's loop), for the per-user delay: refused before any
    TPM command if that account must still wait (`holds`), else its uid goes back
    with a right or wrong PIN's reply (TARGET_UID) for the server to count."""
    if verb == PROBE:
        return verbs.answer(verbs.tpm_probe, policy_path, caller, fields)
    function = verbs.VERBS[verb][0]
    if verb not in verbs.TRIES_A_PIN and not (verb in verbs.THROTTLED and holds):
        return verbs.answer(function, policy_path, caller, fields)
    # Only root may name another account; anyone else's request is about its own uid,
    # and a name it sends is never looked up here (a slow directory: verbs._target).
    # A pin-login's only while someone must wait.
    target = _uid_of(fields["user"]) if caller.is_root else caller.uid
    if target in holds:  # pin-login too: no PIN is asked for in vain
        return throttle.refusal(holds[target]).json_fields()
    reply = verbs.answer(function, policy_path, caller, fields)
    if verb in verbs.TRIES_A_PIN and reply.get("result") in ("success", "wrong_pin"):
        reply[TARGET_UID] = target
    return reply


def _uid_of(name: str) -> int | None:
    try:
        return users.lookup_user(name).uid
    except Exception:  # noqa: BLE001 - the server then goes by the caller's uid
        return None
