"""pinutild's side of the password proof (proof.py): start one for a client's
connection, then read its verdict in the event loop, never waiting for it.

Where the proof runs: with `proof_socket` set (systemd/pinutil-proof.socket, or any
`pinutil-proof --listen PATH`), in that root process, whose end must be root
(SO_PEERCRED: only root runs pam_unix for another user, and only a root peer's
"success" counts). Without it, pinutild itself must be root (the tests, an init
without the proof socket): a forked child of the event loop runs the same
`proof.serve`. The TPM worker is never involved: a user who takes a minute to type
their password holds no one else's login.
"""
from __future__ import annotations

import array
import os
import signal
import socket
import sys

from pinutil import errors
from pinutil.service import protocol

_zombies: list[int] = []


class Proof:
    """One running proof, for the client connection `owner` (the server's object)."""

    __slots__ = ("buffer", "owner", "pid", "sock")

    def __init__(self, sock: socket.socket, pid: int, owner) -> None:
        self.sock, self.pid, self.owner = sock, pid, owner
        self.buffer = bytearray()

    def read(self) -> dict | None:
        """The verdict once it is whole (None: not yet); ProtocolError at an early end
        or on a malformed frame."""
        try:
            data = self.sock.recv(protocol.HEADER_SIZE + protocol.MAX_BODY - len(self.buffer))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            raise protocol.ProtocolError(f"the proof process: {e.strerror}") from None
        if not data:
            raise protocol.ProtocolError("the proof process ended without a verdict")
        self.buffer += data
        if len(self.buffer) < protocol.HEADER_SIZE:
            return None
        need = protocol.HEADER_SIZE + protocol.body_length(bytes(self.buffer[:4]))
        if len(self.buffer) < need:
            return None
        return protocol.decode_frame(bytes(self.buffer[:need]))

    def close(self) -> None:
        self.sock.close()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _zombies.append(self.pid)
            self.pid = 0
            reap()


def reap() -> None:
    """Collect the forked provers that ended (never waits)."""
    for pid in list(_zombies):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _zombies.remove(pid)


def start(proof_socket: str | None, user: str, uid: int, client: socket.socket,
          owner) -> Proof:
    """Ask for the proof of `user`'s password (the client's `uid`), with the client's
    connection attached; PermissionDenied or TpmUnavailable when it cannot start."""
    if proof_socket:
        sock, pid = _connect(proof_socket), 0
    elif os.geteuid() == 0:
        sock, pid = _fork_prover()
    else:
        raise errors.PermissionDenied(
            "pinutild cannot check passwords: it does not run as root and has no proof "
            "process (pinutil-proof.socket); ask root to enrol you")
    try:
        fds = array.array("i", [client.fileno()])
        sock.sendmsg([protocol.encode({"user": user, "uid": uid})],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except OSError as e:
        proof = Proof(sock, pid, owner)
        proof.close()
        raise errors.TpmUnavailable(f"cannot ask the proof process: {e.strerror}") from None
    return Proof(sock, pid, owner)


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setblocking(False)  # a unix connect completes at once, or fails (full queue)
    try:
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except OSError as e:
        sock.close()
        raise errors.TpmUnavailable(f"cannot reach the proof process at {path}: "
                                    f"{e.strerror or type(e).__name__}") from None
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid != 0:  # only root can run the proof: anyone else's "success" is worthless
        sock.close()
        raise errors.TpmUnavailable(f"{path} is served by uid {uid}, not root: not asked")
    return sock


def _die_with_parent() -> None:
    """A prover outliving a killed pinutild would hold its client's connection open
    until the answer's timeout: PR_SET_PDEATHSIG kills it with its parent."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _fork_prover() -> tuple[socket.socket, int]:
    from pinutil.service import proof
    from pinutil.service.worker import _close_all_but as close_all_but

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the prover: never returns
        code = 1
        try:
            close_all_but(child.fileno())
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            proof.serve(child, {0})
            code = 0
        finally:
            os._exit(code)
    child.close()
    parent.setblocking(False)
    return parent, pid
