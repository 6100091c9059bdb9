"""A man in the middle on the TPM transport, for tests.

    tcti-swtpm (pinutil, the PAM module)  <->  TpmProxy  <->  swtpm

The proxy listens on its own unix socket (`proxy.tcti` is the TCTI string to give the
code under test) and on `<socket>.ctrl`, and connects to a real swtpm's sockets. The
command channel is framed by the TPM header (tag u16, size u32, code u32): every
command is handed to `intercept(command, forward)`, which decides what the client
gets back:

- `forward(command)` sends it to the real TPM and returns the TPM's response;
- the intercept may answer itself (an attacker's forged response, a replay), change
  the response (a corrupted or truncated one), or return None: the connection is
  then closed without an answer (a dropped response);
- a reply that is not one well-framed response (shorter than its header says, or
  shorter than a header) is followed by closing the connection, so the client sees
  EOF instead of waiting forever for bytes that will never come.

The control channel (`<socket>.ctrl`, used by tcti-swtpm for its platform commands)
is relayed byte for byte. Every command-channel exchange is kept in `exchanges` (the
proxy's transcript: what a bus interposer sees). Helpers below parse the few TPM
structures the tests need; they are written from the TPM 2.0 Library, Part 3, not
taken from the code under test.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable

HEADER = struct.Struct(">HII")
TAG_NO_SESSIONS = 0x8001
TAG_SESSIONS = 0x8002
MAX_MESSAGE = 64 * 1024

CC_NV_READ = 0x14E
CC_NV_READ_PUBLIC = 0x169
CC_READ_PUBLIC = 0x173
CC_CREATE_PRIMARY = 0x131
CC_START_AUTH_SESSION = 0x176
CC_FLUSH_CONTEXT = 0x165

Forward = Callable[[bytes], bytes]
Intercept = Callable[[bytes, Forward], "bytes | None"]


def forward_everything(command: bytes, forward: Forward) -> bytes | None:
    return forward(command)


class Exchange:
    """One command and what the client got back (None: dropped) and whether the
    real TPM saw the command (`tpm_response` is then its genuine answer)."""

    __slots__ = ("command", "reply", "tpm_response")

    def __init__(self, command: bytes) -> None:
        self.command = command
        self.reply: bytes | None = None
        self.tpm_response: bytes | None = None

    @property
    def code(self) -> int:
        return command_code(self.command)

    @property
    def forwarded(self) -> bool:
        return self.tpm_response is not None


class TpmProxy:
    """See the module docstring. Use as a context manager, or start()/stop()."""

    def __init__(self, upstream_sock: str, sock: str,
                 intercept: Intercept = forward_everything) -> None:
        self.upstream = upstream_sock
        self.sock = sock
        self.tcti = f"swtpm:path={sock}"
        self.intercept = intercept
        self.exchanges: list[Exchange] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> TpmProxy:
        for path, handler in ((self.sock, self._serve_commands),
                              (self.sock + ".ctrl", self._serve_control)):
            if os.path.exists(path):
                os.unlink(path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            os.chmod(path, 0o666)  # the helper backend may run as another uid
            listener.listen(16)
            self._listeners.append(listener)
            self._spawn(self._accept_loop, listener, handler)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for listener in self._listeners:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for path in (self.sock, self.sock + ".ctrl"):
            if os.path.exists(path):
                os.unlink(path)

    def __enter__(self) -> TpmProxy:  # noqa: PYI034 - typing.Self needs 3.11+ typing import
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self, listener: socket.socket, handler) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._spawn(handler, conn)

    # -- the command channel --------------------------------------------------------
    def _serve_commands(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        upstream: list[socket.socket] = []

        def forward(command: bytes) -> bytes:
            if not upstream:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(self.upstream)
                upstream.append(up)
            upstream[0].sendall(command)
            response = read_message(upstream[0])
            if response is None:
                raise ConnectionError("the TPM closed the connection")
            exchange.tpm_response = response
            return response

        try:
            while True:
                command = read_message(client)
                if command is None:
                    return
                exchange = Exchange(command)
                with self._lock:
                    self.exchanges.append(exchange)
                reply = self.intercept(command, forward)
                exchange.reply = reply
                if reply is None:
                    return
                client.sendall(reply)
                if len(reply) < HEADER.size or HEADER.unpack_from(reply)[1] != len(reply):
                    return
        except OSError:
            return
        finally:
            client.close()
            for up in upstream:
                up.close()

    # -- the control channel: relayed as it is --------------------------------------------
    def _serve_control(self, client: socket.socket) -> None:
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(self.upstream + ".ctrl")
        except OSError:
            client.close()
            up.close()
            return
        self._spawn(_pump, up, client)
        _pump(client, up)

    # -- transcript queries ---------------------------------------------------------
    def commands(self, code: int) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.code == code]

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(4096)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def read_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_message(conn: socket.socket) -> bytes | None:
    """One TPM command or response framed by its header's size; None on EOF."""
    header = read_exact(conn, HEADER.size)
    if header is None:
        return None
    size = HEADER.unpack(header)[1]
    if not HEADER.size <= size <= MAX_MESSAGE:
        raise ConnectionError(f"unframeable TPM message of size {size}")
    body = read_exact(conn, size - HEADER.size)
    return None if body is None else header + body


# ---- TPM structures the tests read and write (TPM 2.0 Library, Part 2 and 3) ----------
def command_code(message: bytes) -> int:
    return HEADER.unpack_from(message)[2]


response_code = command_code  # same position: tag, size, then the code


def with_header(tag: int, code: int, body: bytes) -> bytes:
    return HEADER.pack(tag, HEADER.size + len(body), code) + body


class Reader:
    """Sequential big-endian reader over a TPM message."""

    def __init__(self, data: bytes, offset: int = HEADER.size) -> None:
        self.data = data
        self.at = offset

    def u8(self) -> int:
        self.at += 1
        return self.data[self.at - 1]

    def u16(self) -> int:
        self.at += 2
        return struct.unpack_from(">H", self.data, self.at - 2)[0]

    def u32(self) -> int:
        self.at += 4
        return struct.unpack_from(">I", self.data, self.at - 4)[0]

    def raw(self, n: int) -> bytes:
        self.at += n
        if self.at > len(self.data):
            raise ValueError("short TPM message")
        return self.data[self.at - n:self.at]

    def tpm2b(self) -> bytes:
        return self.raw(self.u16())


def tpm2b(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


class AuthCommand:
    """One TPMS_AUTH_COMMAND."""

    __slots__ = ("attributes", "handle", "hmac", "nonce")

    def __init__(self, r: Reader) -> None:
        self.handle = r.u32()
        self.nonce = r.tpm2b()
        self.attributes = r.u8()
        self.hmac = r.tpm2b()


def parse_command(command: bytes, handles: int) -> tuple[list[int], list[AuthCommand], Reader]:
    """(handles, authorisations, reader at the parameters) of a command."""
    r = Reader(command)
    tag = HEADER.unpack_from(command)[0]
    found = [r.u32() for _ in range(handles)]
    auths = []
    if tag == TAG_SESSIONS:
        end = r.u32() + r.at
        while r.at < end:
            auths.append(AuthCommand(r))
    return found, auths, r
