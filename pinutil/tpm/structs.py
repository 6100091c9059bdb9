"""The TPM structures pinutil builds and checks, with no TPM in sight: TPM2B buffers,
an NV index's public area (`NvPublic`, and its Name), and our storage primary (its
template, its Name from a public point, and the check that a public area is it).

The storage primary is an ECC P-256 key in the owner hierarchy, noDA: the master
key's parent (master_key/lifecycle.py) and the PIN check's salt key (tpm/sapi.py).
The same template always yields the same key from the same owner seed.
"""
from __future__ import annotations

import struct

from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.session_crypto import (
    sha256,  # builtin; hashlib would load OpenSSL (~2 ms)
)

P256_BYTES = 32  # a P-256 coordinate
_STORAGE_PRIMARY_ATTRS = (
    lib.TPMA_OBJECT_FIXEDTPM | lib.TPMA_OBJECT_FIXEDPARENT | lib.TPMA_OBJECT_SENSITIVEDATAORIGIN
    | lib.TPMA_OBJECT_USERWITHAUTH | lib.TPMA_OBJECT_NODA | lib.TPMA_OBJECT_RESTRICTED
    | lib.TPMA_OBJECT_DECRYPT
)


def fill_tpm2b(tpm2b, value: bytes, field: str = "buffer") -> None:
    """Copy `value` into a TPM2B's byte array (`field`) and set its size; refuse what
    does not fit (cffi's memmove would not)."""
    buffer = getattr(tpm2b, field)
    if len(value) > len(buffer):
        raise ValueError(f"{len(value)} bytes do not fit a TPM2B of {len(buffer)}")
    tpm2b.size = len(value)
    ffi.memmove(buffer, value, len(value))


def wipe_tpm2b(tpm2b, field: str = "buffer") -> None:
    """Zero the bytes a TPM2B holds (a secret we put there)."""
    ffi.memmove(getattr(tpm2b, field), bytes(tpm2b.size), tpm2b.size)


def password_auth(value: bytes):
    """A SAPI command authorisation: the password session with `value` (in clear)."""
    auths = ffi.new("TSS2L_SYS_AUTH_COMMAND *")
    auths.count = 1
    auths.auths[0].sessionHandle = lib.TPM2_RS_PW
    fill_tpm2b(auths.auths[0].hmac, value)
    return auths


def storage_primary_template():
    """TPM2B_PUBLIC of our storage primary (see the module docstring)."""
    public = ffi.new("TPM2B_PUBLIC *")
    area = public.publicArea
    area.type = lib.TPM2_ALG_ECC
    area.nameAlg = lib.TPM2_ALG_SHA256
    area.objectAttributes = _STORAGE_PRIMARY_ATTRS
    ecc = area.parameters.eccDetail
    ecc.symmetric.algorithm = lib.TPM2_ALG_AES
    ecc.symmetric.keyBits.aes = 128
    ecc.symmetric.mode.aes = lib.TPM2_ALG_CFB
    ecc.scheme.scheme = lib.TPM2_ALG_NULL
    ecc.curveID = lib.TPM2_ECC_NIST_P256
    ecc.kdf.scheme = lib.TPM2_ALG_NULL
    return public


def storage_primary_name(x: bytes, y: bytes) -> bytes:
    """The Name of our storage primary with public point (x, y): nameAlg || SHA-256 of
    its marshalled public area (Part 2, 12.2.4), which is the template above with that
    point. The salt key check compares it with the Name root recorded."""
    if len(x) != P256_BYTES or len(y) != P256_BYTES:
        raise ValueError("a P-256 point has 32-byte coordinates")
    return struct.pack(">H", lib.TPM2_ALG_SHA256) + sha256(_storage_primary_area(x, y)).digest()


def storage_primary_parameters() -> bytes:
    """CreatePrimary's marshalled parameters for our template (for its cpHash, when an
    HMAC session authorises it): an empty TPM2B_SENSITIVE_CREATE (userAuth and data
    empty), the template as TPM2B_PUBLIC (empty unique point), no outsideInfo, no PCRs."""
    area = _storage_primary_area(b"", b"")
    return (struct.pack(">HHH", 4, 0, 0) + struct.pack(">H", len(area)) + area
            + struct.pack(">HI", 0, 0))


def _storage_primary_area(x: bytes, y: bytes) -> bytes:
    """The marshalled TPMT_PUBLIC of storage_primary_template() with unique point (x, y)."""
    return (struct.pack(">HHIH", lib.TPM2_ALG_ECC, lib.TPM2_ALG_SHA256, _STORAGE_PRIMARY_ATTRS, 0)
            + struct.pack(">HHHHHH", lib.TPM2_ALG_AES, 128, lib.TPM2_ALG_CFB, lib.TPM2_ALG_NULL,
                          lib.TPM2_ECC_NIST_P256, lib.TPM2_ALG_NULL)
            + struct.pack(">H", len(x)) + x + struct.pack(">H", len(y)) + y)


def is_storage_primary(area) -> bool:
    """A TPMT_PUBLIC that is exactly our storage primary template (any point of the
    right size)."""
    template = storage_primary_template()  # keeps the struct alive while `want` is used
    want = template.publicArea
    ecc, want_ecc = area.parameters.eccDetail, want.parameters.eccDetail
    return (area.type == want.type and area.nameAlg == want.nameAlg
            and area.objectAttributes == want.objectAttributes and area.authPolicy.size == 0
            and ecc.symmetric.algorithm == want_ecc.symmetric.algorithm
            and ecc.symmetric.keyBits.aes == want_ecc.symmetric.keyBits.aes
            and ecc.symmetric.mode.aes == want_ecc.symmetric.mode.aes
            and ecc.scheme.scheme == want_ecc.scheme.scheme
            and ecc.curveID == want_ecc.curveID and ecc.kdf.scheme == want_ecc.kdf.scheme
            and area.unique.ecc.x.size == P256_BYTES and area.unique.ecc.y.size == P256_BYTES)


def ecc_point(area) -> tuple[bytes, bytes]:
    """(x, y) of a P-256 TPMT_PUBLIC that passed is_storage_primary."""
    point = area.unique.ecc
    return (bytes(ffi.buffer(point.x.buffer, P256_BYTES)),
            bytes(ffi.buffer(point.y.buffer, P256_BYTES)))


class NvPublic:
    """TPMS_NV_PUBLIC of an NV index (a plain class: `dataclasses` costs ~10 ms to import)."""

    __slots__ = ("attributes", "auth_policy", "data_size", "handle", "name_alg")

    def __init__(self, handle: int, name_alg: int, attributes: int, auth_policy: bytes,
                 data_size: int) -> None:
        self.handle = handle
        self.name_alg = name_alg
        self.attributes = attributes
        self.auth_policy = auth_policy
        self.data_size = data_size

    @classmethod
    def from_tpms(cls, p) -> NvPublic:
        """From a cffi TPMS_NV_PUBLIC (copied: the result does not keep `p` alive)."""
        return cls(handle=p.nvIndex, name_alg=p.nameAlg, attributes=p.attributes,
                   auth_policy=bytes(ffi.buffer(p.authPolicy.buffer, p.authPolicy.size)),
                   data_size=p.dataSize)

    def __eq__(self, other: object) -> bool:
        return type(other) is NvPublic and self.marshal() == other.marshal()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (f"NvPublic(handle=0x{self.handle:08x}, name_alg=0x{self.name_alg:x}, "
                f"attributes=0x{self.attributes:08x}, auth_policy={self.auth_policy.hex()}, "
                f"data_size={self.data_size})")

    @property
    def nv_type(self) -> int:
        return (self.attributes & lib.TPMA_NV_TPM2_NT_MASK) >> lib.TPMA_NV_TPM2_NT_SHIFT

    def marshal(self) -> bytes:
        """Big-endian TPMS_NV_PUBLIC, as the TPM hashes it for the Name."""
        return (
            struct.pack(">IHIH", self.handle, self.name_alg, self.attributes, len(self.auth_policy))
            + self.auth_policy
            + struct.pack(">H", self.data_size)
        )

    def name(self) -> bytes:
        """The index's Name (nameAlg || H(public)); only SHA256 is supported."""
        if self.name_alg != lib.TPM2_ALG_SHA256:
            raise ValueError("only SHA256 NV names are computed")
        return struct.pack(">H", self.name_alg) + sha256(self.marshal()).digest()
