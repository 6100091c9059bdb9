"""pinutil-proof: the root process that checks an account password for pinutild.

    python3 -m pinutil.service.proof [--listen PATH] [--peer-user NAME]

Why a process of its own: a user who enrols their own PIN through pinutild proves
their account password first, and the service must run that PAM transaction itself (a
client that says "I authenticated" cannot be believed). pam_unix verifies another
user's password only when the real uid is 0 (its helper unix_chkpwd refuses anyone
else), and pinutild runs as its own unprivileged account. So this small root process
does one thing: run the PAM service `pinutil` (pam_authenticate, pam_acct_mgmt) for
one named user, with the conversation on that user's own connection, and answer
"success" or why not. It never opens the TPM, and never sees a PIN.

One request per connection, from pinutild only:

    pinutild -> proof   a frame {user, uid} with the client's connection attached
                        (SCM_RIGHTS): `uid` is the client's, from SO_PEERCRED;
                        the proof reads that connection's SO_PEERCRED itself
                        and refuses unless it is `uid` (a socketpair made
                        by the pinutild account carries the pinutild uid)
    proof -> client     prompt frames {prompt, style}; the client answers the ones
                        that ask (style echo_off or echo_on) with a frame {answer}
    proof -> pinutild   the verdict {result, error}: "success", or wrong_password,
                        permission_denied, cancelled, bad_request

Only the service's account (or root) may ask: the socket is 0600 and owned by it
(systemd/pinutil-proof.socket), and SO_PEERCRED is checked again here. `user` must be
the account of `uid` (a user proves only their own password; root needs no proof and
never asks). At most MAX_PROMPTS messages, each answer within ANSWER_SECONDS, the whole
proof within PROOF_SECONDS, and none past pinutild's going away (its connection
closed: a killed service); an answer is wiped once libpam has its copy. Every refusal
is logged like `pinutil setup` logs it (pinutil.audit); a success is logged by the
service once the PIN is enrolled.

Started by systemd (Accept=yes: one process per connection, the connection as fd 3),
or with `--listen PATH` by other inits and the tests (a child per connection). pinutild
run as root does not need it: it forks a child that runs `serve` the same way.
"""
from __future__ import annotations

import argparse
import array
import os
import pwd
import select
import signal
import socket
import sys
from time import monotonic

from pinutil import audit, errors, users
from pinutil.service import protocol
from pinutil.service.no_core import forbid_core_dumps
from pinutil.users import SERVICE_USER

MAX_PROMPTS = 8  # pam_unix asks once; a stack that asks more is cut off
ANSWER_SECONDS = 60.0  # one answer: a person typing
PROOF_SECONDS = 180.0  # the whole proof
REQUEST_SECONDS = 5.0  # pinutild's request
SD_LISTEN_FDS_START = 3

#: PAM message styles (pam_appl.h) as the wire names them.
STYLES = {1: "echo_off", 2: "echo_on", 3: "error", 4: "info"}
_FD_SIZE = array.array("i").itemsize


def _wait(sock: socket.socket, deadline: float, watch: socket.socket | None) -> None:
    """Until `sock` is readable; ProtocolError if `watch` (pinutild's connection, on
    which nothing more is sent) becomes readable first: pinutild went away, and the
    client must not be held until the answer's timeout."""
    if watch is None:
        return
    ready, _, _ = select.select([sock, watch], [], [], max(0.0, deadline - monotonic()))
    if watch in ready:
        raise protocol.ProtocolError("pinutild went away")


def _frame_from(sock: socket.socket, deadline: float, with_fd: bool = False,
                watch: socket.socket | None = None):
    """One whole frame from `sock` before `deadline`, as (fields, fd or None). The body
    is read into a bytearray and decoded from it, so a `b` value (an answer) comes back
    as a bytearray the caller can wipe; the buffer itself is wiped here."""
    header = bytearray()
    fd = None
    body = bytearray()
    try:
        while len(header) < protocol.HEADER_SIZE:
            sock.settimeout(max(0.001, deadline - monotonic()))
            if with_fd and fd is None and not header:
                data, ancillary, flags, _ = sock.recvmsg(
                    protocol.HEADER_SIZE, socket.CMSG_SPACE(_FD_SIZE))
                fd = _one_fd(ancillary, flags)
            else:
                _wait(sock, deadline, watch)
                data = sock.recv(protocol.HEADER_SIZE - len(header))
            if not data:
                raise protocol.ProtocolError("the connection closed early")
            header += data
        need = protocol.body_length(bytes(header))
        while len(body) < need:
            sock.settimeout(max(0.001, deadline - monotonic()))
            _wait(sock, deadline, watch)
            data = sock.recv(need - len(body))
            if not data:
                raise protocol.ProtocolError("the connection closed early")
            body += data
        return protocol.decode_body(body), fd
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    finally:
        body[:] = bytes(len(body))


def _one_fd(ancillary, flags: int) -> int | None:
    """The one descriptor pinutild attached; any other, or more, are closed."""
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % _FD_SIZE])
    if len(fds) != 1 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise protocol.ProtocolError("expected exactly one connection")
    return fds[0]


def _send(sock: socket.socket, fields: dict, deadline: float) -> None:
    sock.settimeout(max(0.001, deadline - monotonic()))
    sock.sendall(protocol.encode(fields))


class ClientConversation:
    """PAM's conversation, on the client's connection: each message is a prompt frame,
    each answer a frame {answer: bytes}; anything else ends the proof (Cancelled)."""

    def __init__(self, client: socket.socket, deadline: float,
                 watch: socket.socket | None = None) -> None:
        self.client, self.deadline, self.watch = client, deadline, watch
        self.count = 0

    def ask(self, text: str, echo: bool, style: int) -> bytearray | None:
        self.count += 1
        if self.count > MAX_PROMPTS:
            raise errors.Cancelled(f"more than {MAX_PROMPTS} PAM messages")
        step = min(self.deadline, monotonic() + ANSWER_SECONDS)
        try:
            _send(self.client, {"prompt": text[:512], "style": STYLES[style]}, step)
            if style not in (1, 2):
                return None
            fields, _ = _frame_from(self.client, step, watch=self.watch)
        except (OSError, protocol.ProtocolError) as e:  # TimeoutError is an OSError
            raise errors.Cancelled(f"no answer to the password prompt ({_why(e)})") from None
        answer = fields.get("answer")
        if set(fields) != {"answer"} or not isinstance(answer, bytearray):
            raise errors.Cancelled("an answer frame must hold exactly one field, answer")
        return answer


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__


def allowed_peers(peer_user: str) -> set[int]:
    """Root, and the service's account (when it exists)."""
    allowed = {0}
    try:
        allowed.add(pwd.getpwnam(peer_user).pw_uid)
    except KeyError:
        pass
    return allowed


def serve(conn: socket.socket, allowed: set[int]) -> None:
    """Answer one request on `conn` (see the module docstring); never raises."""
    verdict: dict = {"result": "error", "error": "internal error"}
    client = None
    deadline = monotonic() + REQUEST_SECONDS
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        peer_uid = int.from_bytes(creds[4:8], sys.byteorder)
        if peer_uid not in allowed:
            verdict = {"result": "permission_denied",
                       "error": f"uid {peer_uid} may not ask for a password proof"}
            return
        try:
            request, fd = _frame_from(conn, deadline, with_fd=True)
        except (OSError, protocol.ProtocolError) as e:
            verdict = {"result": "bad_request", "error": _why(e)}
            return
        client = socket.socket(fileno=fd)
        user_name, uid = request.get("user"), request.get("uid")
        if set(request) != {"user", "uid"} or type(user_name) is not str or type(uid) is not int:
            verdict = {"result": "bad_request", "error": "a request is {user, uid}"}
            return
        verdict = prove(user_name, uid, client, watch=conn)
    except Exception as e:  # noqa: BLE001 - a bug: reported, never success
        verdict = {"result": "error", "error": f"internal error ({type(e).__name__})"}
    finally:
        if client is not None:
            client.close()  # pinutild keeps its own copy of the connection
        try:
            _send(conn, verdict, monotonic() + REQUEST_SECONDS)
        except (OSError, protocol.ProtocolError):
            pass


def prove(user_name: str, uid: int, client: socket.socket,
          watch: socket.socket | None = None) -> dict:
    """The verdict on `user_name`'s password, asked on `client`; logged unless success."""
    from pinutil.pin.password_proof import prove_password

    caller = target = None
    connected = connected_uid(client)  # the caller: the kernel's word, not pinutild's
    try:
        caller = users.user_by_uid(connected)
        target = users.lookup_user(user_name)
        if connected != uid:
            raise errors.PermissionDenied(
                f"the attached connection is uid {connected}'s, not uid {uid}'s: a "
                "password proof runs only on the enrolling user's own connection")
        users.may_setup(caller, target)
        if not users.setup_needs_password(caller):
            raise errors.PermissionDenied("root enrols without a password proof")
        conversation = ClientConversation(client, monotonic() + PROOF_SECONDS, watch)
        prove_password(target.name, conversation.ask)
        return {"result": "success"}
    except errors.PinutilError as e:
        fields = e.json_fields()
        audit.log("setup", caller, target, user_name, e.token, connected)
        return {"result": fields["result"], "error": errors.one_line(fields["error"])[:300]}


def connected_uid(client: socket.socket) -> int:
    """The effective uid the kernel recorded when the client connected (SO_PEERCRED).
    The proof believes this, not pinutild's word: whoever runs as pinutild could
    otherwise attach a socketpair of its own and ask for anyone's password (review F3).
    The enrolling `pinutil` is plain 0755 (effective uid = real uid); a set-uid root
    client arrives as 0 and is refused, which costs nothing: root needs no proof."""
    creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(creds[4:8], sys.byteorder)


def _serve_forked(listener: socket.socket, allowed: set[int]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # PAM may wait for its own
                listener.close()
                serve(conn, allowed)
                code = 0
            finally:
                os._exit(code)
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pinutil-proof",
                                     description="the password proof of pinutild")
    parser.add_argument("--listen", metavar="PATH",
                        help="bind PATH (mode 0600, owned by --peer-user) without systemd")
    parser.add_argument("--peer-user", default=SERVICE_USER, metavar="NAME",
                        help=f"the account that may ask besides root (default {SERVICE_USER})")
    args = parser.parse_args(argv)
    allowed = allowed_peers(args.peer_user)
    if args.listen:
        forbid_core_dumps()  # the unit's LimitCORE=0 without systemd
        listener = _bound(args.listen, args.peer_user)
        _serve_forked(listener, allowed)
        return 0
    if os.environ.pop("LISTEN_PID", None) != str(os.getpid()) or \
            os.environ.pop("LISTEN_FDS", None) != "1":
        parser.error("not started by systemd with one connection: --listen PATH is required")
    conn = socket.socket(fileno=SD_LISTEN_FDS_START)
    serve(conn, allowed)
    conn.close()
    return 0


def _bound(path: str, peer_user: str) -> socket.socket:
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # 0600 from bind() itself
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    try:
        entry = pwd.getpwnam(peer_user)
        # Not by a name that could be swapped for a symlink between bind and here.
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    except KeyError:
        pass  # root alone may connect
    sock.listen(16)
    return sock


if __name__ == "__main__":
    sys.exit(main())
