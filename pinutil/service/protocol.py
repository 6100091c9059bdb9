"""pinutild's wire format: one request and one reply per connection, one frame each.

    frame  = u32 body length (big-endian, 2 .. MAX_BODY) || body
    body   = u8 version (VERSION) || u8 field count (0 .. MAX_FIELDS) || field*
    field  = u8 name length (1 .. 32) || name (ASCII a-z 0-9 _, starting with a letter)
             || u8 type || u16 value length (big-endian) || value
    type   = 's' UTF-8 text | 'b' bytes | 'i' signed 64-bit integer (8 bytes, big-endian)
             | 't' true | 'f' false | 'n' none (the last three with an empty value)

A request names its verb in the field `verb`; a reply says its outcome in `result`
(`success` or one of the result tokens `pinutil --json` uses). Every value has exactly
one encoding, a name appears at most once, nothing follows the last field, and the
whole frame is at most 4 + MAX_BODY bytes: the decoder is one bounded loop, and a
frame that breaks any rule is refused whole (`ProtocolError`), never half-read.

Why not JSON: the client runs inside every PAM host, whose cold login path imports
no `json` (~2 ms); JSON's loose corners (duplicate keys, last one wins; unbounded
integers and nesting, RecursionError; lone surrogates) would all be the service's
attack surface; and a PIN is bytes, which JSON cannot carry without an extra encoding.
Stdlib only, no `struct` (int.from_bytes suffices): it is on the login path.
"""
from __future__ import annotations

VERSION = 1
HEADER_SIZE = 4
MAX_BODY = 4096
MAX_FIELDS = 16
MAX_NAME = 32

_NAME_FIRST = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_NAME_CHARS = _NAME_FIRST | frozenset(b"0123456789_")
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1


class ProtocolError(Exception):
    """A frame that breaks the format. `str(e)` says which rule (never a value)."""


def body_length(header: bytes) -> int:
    """The body length a 4-byte header announces; ProtocolError when out of bounds."""
    if len(header) != HEADER_SIZE:
        raise ProtocolError("truncated header")
    length = int.from_bytes(header, "big")
    if not 2 <= length <= MAX_BODY:
        raise ProtocolError(f"a body of {length} bytes (allowed: 2 to {MAX_BODY})")
    return length


def _encode_value(value: object) -> tuple[bytes, bytes]:
    if value is True:
        return b"t", b""
    if value is False:
        return b"f", b""
    if value is None:
        return b"n", b""
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ProtocolError("an integer beyond 64 bits")
        return b"i", value.to_bytes(8, "big", signed=True)
    if isinstance(value, str):
        return b"s", value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return b"b", bytes(value)
    raise ProtocolError(f"cannot encode a {type(value).__name__}")


def encode(fields: dict) -> bytes:
    """One whole frame (header and body) carrying `fields`; ProtocolError if a name,
    a value or the total size breaks the format."""
    if len(fields) > MAX_FIELDS:
        raise ProtocolError(f"more than {MAX_FIELDS} fields")
    parts = [bytes((VERSION, len(fields)))]
    for name, value in fields.items():
        raw = name.encode("ascii", "replace") if isinstance(name, str) else b""
        if not _valid_name(raw):
            raise ProtocolError("a field name outside [a-z][a-z0-9_]{0,31}")
        kind, data = _encode_value(value)
        if len(data) > 0xFFFF:
            raise ProtocolError("a value longer than 65535 bytes")
        parts += (bytes((len(raw),)), raw, kind, len(data).to_bytes(2, "big"), data)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ProtocolError(f"a body larger than {MAX_BODY} bytes")
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def _valid_name(raw: bytes) -> bool:
    return (0 < len(raw) <= MAX_NAME and raw[0] in _NAME_FIRST
            and all(c in _NAME_CHARS for c in raw))


def _decode_value(kind: int, data: bytes) -> object:
    if kind == 0x73:  # 's'
        try:
            return data.decode("utf-8")  # strict: no lone surrogates, no overlong forms
        except UnicodeDecodeError:
            raise ProtocolError("text that is not UTF-8") from None
    if kind == 0x62:  # 'b'
        return data
    if kind == 0x69:  # 'i'
        if len(data) != 8:
            raise ProtocolError("an integer that is not 8 bytes")
        return int.from_bytes(data, "big", signed=True)
    if kind in (0x74, 0x66, 0x6E):  # 't', 'f', 'n'
        if data:
            raise ProtocolError("a true/false/none with a value")
        return {0x74: True, 0x66: False, 0x6E: None}[kind]
    raise ProtocolError("an unknown value type")


def decode_body(body: bytes) -> dict:
    """The fields of one body (without its header); ProtocolError on any deviation."""
    if not 2 <= len(body) <= MAX_BODY:
        raise ProtocolError("a body of the wrong size")
    if body[0] != VERSION:
        raise ProtocolError(f"protocol version {body[0]} (this side speaks {VERSION})")
    count = body[1]
    if count > MAX_FIELDS:
        raise ProtocolError(f"more than {MAX_FIELDS} fields")
    fields: dict = {}
    at = 2
    for _ in range(count):
        if at >= len(body):
            raise ProtocolError("truncated field")
        size = body[at]
        raw = body[at + 1:at + 1 + size]
        if len(raw) != size or not _valid_name(raw):
            raise ProtocolError("a bad field name")
        at += 1 + size
        if at + 3 > len(body):
            raise ProtocolError("truncated field")
        kind = body[at]
        length = int.from_bytes(body[at + 1:at + 3], "big")
        at += 3
        if at + length > len(body):
            raise ProtocolError("truncated value")
        name = raw.decode("ascii")
        if name in fields:
            raise ProtocolError("a field named twice")
        fields[name] = _decode_value(kind, body[at:at + length])
        at += length
    if at != len(body):
        raise ProtocolError("bytes after the last field")
    return fields


def decode_frame(frame: bytes) -> dict:
    """A whole frame (header and body), as a client or a test reads it."""
    length = body_length(frame[:HEADER_SIZE])
    if len(frame) != HEADER_SIZE + length:
        raise ProtocolError("the frame's length differs from its header")
    return decode_body(frame[HEADER_SIZE:])
