"""The caller's side of pinutild: one request, one reply, within a time limit.

Runs inside every PAM host (backend=daemon), so it imports only `_socket` (the builtin
behind `socket`, whose enum-laden wrapper costs milliseconds) and the protocol. Any
failure to get one well-formed reply is `TpmUnavailable`: the caller never mistakes
silence, a cut-off or garbage for an answer.
"""
from __future__ import annotations

import _socket
from time import monotonic

from pinutil import errors
from pinutil.service import protocol

DEFAULT_SOCKET = "/run/pinutild.sock"


def call(path: str, fields: dict, seconds: float) -> dict:
    """Send `fields` as one request to the service at `path`; its reply's fields."""
    frame = protocol.encode(fields)
    deadline = monotonic() + seconds
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(max(0.001, deadline - monotonic()))
        sock.connect(path)
        sock.sendall(frame)
        header = _read(sock, protocol.HEADER_SIZE, deadline)
        body = _read(sock, protocol.body_length(header), deadline)
        return protocol.decode_body(body)
    except TimeoutError:
        raise errors.TpmUnavailable(f"pinutild did not answer within {seconds:.3g} s") from None
    except protocol.ProtocolError as e:
        raise errors.TpmUnavailable(f"pinutild answered garbage ({e})") from None
    except OSError as e:
        raise errors.TpmUnavailable(f"cannot reach pinutild at {path}: "
                                    f"{e.strerror or type(e).__name__}") from None
    finally:
        sock.close()


def _read(sock, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        sock.settimeout(max(0.001, deadline - monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise protocol.ProtocolError("the service closed the connection early")
        data += chunk
    return bytes(data)
