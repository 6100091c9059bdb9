"""The caller's side of pinutild: one request, one reply, within a time limit.

Runs inside every PAM host (backend=daemon), so it imports only `_socket` (the builtin
behind `socket`, whose enum-laden wrapper costs milliseconds) and the protocol. Any
failure to get one well-formed reply is `TpmUnavailable`: the caller never mistakes
silence, a cut-off or garbage for an answer.
"""
from __future__ import annotations

import _socket
import sys
from time import monotonic, sleep

from pinutil import errors
from pinutil.service import protocol

_LOWER_HEX = frozenset("0123456789abcdef")
#: Every send: a service that has closed the connection (its caps, a restart, a prompt's
#: time limit) must be an error here, not a SIGPIPE that kills a PAM host whose SIGPIPE
#: is at its default (login, su, screen lockers).
_NO_SIGPIPE = _socket.MSG_NOSIGNAL


#: The prompt styles of pinutild's conversation (docs/pinutild.md); the first three
#: want an answer.
ANSWERED = frozenset({"echo_off", "echo_on", "new_pin"})
STYLES = ANSWERED | {"error", "info"}
MAX_PROMPTS = 16


def call(path: str, fields: dict, seconds: float) -> dict:
    """Send `fields` as one request to the service at `path`; its reply's fields."""
    return converse(path, fields, None, seconds)


def converse(path: str, fields: dict, answer, seconds: float, budget=None) -> dict:
    """`call` for a verb that asks back (pin-setup, pin-login): each prompt frame the
    service sends before its reply goes to `answer(text, style)`, whose bytearray answer
    (for the styles in ANSWERED; None for the others) is sent back and wiped. `seconds`
    bounds each wait for the service, not the time `answer` takes (a person typing).
    With a `budget` (a login's pinutil.deadline.TpmBudget) the waits are spent from it
    instead, all together, and `seconds` is ignored."""
    if budget is not None:
        seconds = budget.left
        if seconds <= 0:
            raise errors.TpmUnavailable(
                f"the TPM did not answer within this login's {budget.seconds:g} s")
    started = monotonic()
    deadline = started + seconds
    sock = None
    try:
        frame = protocol.encode(fields)  # a field it cannot carry: unavailable, too
        sock = _connect(path, deadline)
        _require_trusted_server(sock, path)  # before the request: it may hold a PIN
        sock.sendall(frame, _NO_SIGPIPE)
        for _ in range(MAX_PROMPTS + 1):
            header = _read(sock, protocol.HEADER_SIZE, deadline)
            reply = protocol.decode_body(_read(sock, protocol.body_length(header), deadline))
            if "result" in reply:
                return reply
            text, style = reply.get("prompt"), reply.get("style")
            if answer is None or set(reply) != {"prompt", "style"} or \
                    type(text) is not str or style not in STYLES:
                raise protocol.ProtocolError("a frame that is neither a reply nor a prompt")
            asked = monotonic()
            try:
                given = answer(text, style)
            finally:  # the time the answer took (a person typing) is not the service's
                typed = monotonic() - asked
                started += typed
                deadline = monotonic() + seconds if budget is None else deadline + typed
            if style in ANSWERED:
                try:
                    sock.sendall(protocol.encode({"answer": given}), _NO_SIGPIPE)
                finally:
                    given[:] = bytes(len(given))
        raise protocol.ProtocolError(f"more than {MAX_PROMPTS} prompts")
    except TimeoutError:
        raise errors.TpmUnavailable(f"pinutild did not answer within {seconds:.3g} s") from None
    except protocol.ProtocolError as e:
        raise errors.TpmUnavailable(f"pinutild answered garbage ({e})") from None
    except OSError as e:
        raise errors.TpmUnavailable(f"cannot reach pinutild at {path}: "
                                    f"{e.strerror or type(e).__name__}") from None
    finally:
        if sock is not None:
            sock.close()
        if budget is not None:
            budget.left -= monotonic() - started


def pin_login(path: str, fields: dict, read_pin, budget) -> None:
    """A PAM host's PIN login on one connection (pin-login: docs/pinutild.md): the
    service refuses at once or sends one PIN prompt; `read_pin(prompt)` returns the PIN
    as a bytearray (sent, then wiped) or raises a domain error (the connection then
    closes: nothing was tried). Returns only when the service says that this PIN is
    right; raises the service's error otherwise. Its waits are spent from `budget`."""
    asked = []

    def answer(text: str, style: str):
        if style != "echo_off" or asked:
            raise protocol.ProtocolError("pin-login asks for one PIN, once")
        asked.append(style)
        return read_pin(text)

    reply = converse(path, {"verb": "pin-login", **fields}, answer, 0, budget)
    if reply.get("result") != "success":
        raise errors.from_json(reply)
    if not asked or set(reply) != {"result"}:  # a success no PIN of ours was checked for
        raise errors.TpmUnavailable("pinutild answered success without checking a PIN")


def _connect(path: str, deadline: float):
    """A connected socket, trying again while the service's listen queue is full.

    A unix stream connect with a timeout does not wait for room in a full queue: it
    fails at once with EAGAIN. A flood of connections (one user's, say) fills that
    queue faster than the service accepts and closes them, so one full-queue answer
    must not cost a login its PIN: retry until the deadline, then time out."""
    while True:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(max(0.001, deadline - monotonic()))
            sock.connect(path)
            return sock
        except BlockingIOError:
            sock.close()
            if monotonic() >= deadline:
                raise TimeoutError from None
            sleep(0.005)
        except BaseException:
            sock.close()
            raise


def _require_trusted_server(sock, path: str) -> None:
    """The process at the other end must run as root or as the service's own account:
    whoever else listens there (a socket path an administrator got wrong, a user's
    process in a writable directory) would see the PIN and could answer "success"."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    uid = int.from_bytes(creds[4:8], sys.byteorder)
    if uid == 0:
        return
    import pwd

    from pinutil.users import SERVICE_USER  # here: a root service needs neither

    try:
        service_uid = pwd.getpwnam(SERVICE_USER).pw_uid
    except KeyError:
        service_uid = None
    if uid != service_uid:
        raise errors.TpmUnavailable(f"{path} is served by uid {uid}, neither root nor "
                                    f"{SERVICE_USER}: not asked")


def _read(sock, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        sock.settimeout(max(0.001, deadline - monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise protocol.ProtocolError("the service closed the connection early")
        data += chunk
    return bytes(data)


def master_key_token(path: str, user: str, seconds: float) -> str:
    """The keyring token of `user` from the service (root callers only)."""
    reply = call(path, {"verb": "master-key-token", "user": user}, seconds)
    token = reply.get("token")
    if reply.get("result") == "success" and isinstance(token, str) and len(token) == 64 \
            and set(token) <= _LOWER_HEX:
        return token
    if reply.get("result") == "permission_denied":
        raise errors.PermissionDenied("pinutild gives keyring tokens to root callers only")
    if reply.get("result") == "success":  # but no well-formed token: fail closed
        raise errors.TpmUnavailable("pinutild answered a malformed token")
    raise errors.from_json(reply)  # the service's own error (a token never comes with it)

