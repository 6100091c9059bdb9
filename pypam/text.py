"""Bytes <-> str at the C boundary.

PAM strings are C strings in no declared encoding. We decode UTF-8 and keep any other
byte as a surrogate (surrogateescape), so a value always round-trips unchanged and a
module can still tell it was not valid UTF-8 (e.g. to refuse such a PIN).
"""


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def encode(value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {type(value).__name__}")
    raw = value.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise ValueError("PAM strings cannot contain NUL")
    return raw
