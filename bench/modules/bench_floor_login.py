"""The least a pypam module can do to log in with a PIN through pinutild (bench only).

    auth required pam_pypam.so module=bench_floor_login moduledir=... socket=PATH

One pin-login on one connection with nothing around it: the builtin `_socket`, the
frames written out by hand, no policy, no error vocabulary, no budget, no checks of
the peer or of what it sends. It is the lower bound of any login through the service
that is written in Python and run by the shim: what is left over the trivial module
is the service's round trip and the one import a socket needs. NOT a login module:
it believes whatever comes back.
"""
import _socket


def _frame(*fields: tuple[bytes, bytes]) -> bytes:
    body = bytes([1, len(fields)]) + b"".join(
        bytes([len(name)]) + name + kind + len(value).to_bytes(2, "big") + value
        for name, value, kind in ((n, v, b"b" if n == b"answer" else b"s") for n, v in fields))
    return len(body).to_bytes(4, "big") + body


def _reply(sock) -> bytes:
    size = int.from_bytes(sock.recv(4, _socket.MSG_WAITALL), "big")
    return sock.recv(size, _socket.MSG_WAITALL)


def authenticate(pamh, flags, args):
    path = next(a.split("=", 1)[1] for a in args if a.startswith("socket="))
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        sock.sendall(_frame((b"verb", b"pin-login"), (b"user", pamh.get_user().encode())))
        prompt = _reply(sock)
        if b"prompt" not in prompt:
            return 7
        pin = pamh.prompt("PIN: ").encode()
        sock.sendall(_frame((b"answer", pin)))
        return 0 if b"success" in _reply(sock) else 7
    finally:
        sock.close()


def setcred(pamh, flags, args):
    return 0
