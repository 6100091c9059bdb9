"""Our side of a salted TPM2 HMAC session (TPM 2.0 Library, Part 1, sections 19 and 21).

Why not ESAPI's: tpm2-tss 3.2.1 creates and frees a whole OpenSSL library context
for every hash and HMAC it computes (~0.25 ms each on our machine), so its salted
PIN check spent ~5 ms of client CPU per login. Here everything is SHA-256 over the
interpreter's builtin SHA-256 (`_sha256`, `_sha2` since 3.12); the one elliptic-curve
step (the ECDH salt) is `pinutil_p256_ecdh` in our cffi binding.

The formulas, with H = SHA-256 and || concatenation:
  KDFa(key, label, u, v, bits) = HMAC(key, [1]32 || label || 0 || u || v || [bits]32) || ...
  KDFe(Z, label, u, v)         = H([1]32 || Z || label || 0 || u || v)   (256 bits)
  salt          = KDFe(Z, "SECRET", Qe.x, Qtpm.x)    Z = x of (our ephemeral scalar * Qtpm)
  sessionKey    = KDFa(salt, "ATH", nonceTPM, nonceCaller, 256)   (no bind entity)
  sessionValue  = sessionKey || authValue of the entity the session authorises
  command HMAC  = HMAC(sessionValue, cpHash || nonceCaller || nonceTPM || attributes)
  response HMAC = HMAC(sessionValue, rpHash || nonceTPM' || nonceCaller || attributes')
  XOR mask      = KDFa(sessionValue, "XOR", nonceTPM', nonceCaller, 8 * len)  (responses)

A wrong formula here cannot pass for a right one: the TPM refuses the command
HMAC, and our check of the response HMAC refuses any answer we cannot authenticate.
"""
import struct

from pinutil import errors
from pinutil.tpm.handles import TpmHandle

try:  # builtin: no OpenSSL, ~0.05 ms to import; `_sha256` until 3.11, `_sha2` since 3.12
    from _sha2 import sha256
except ImportError:
    try:
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - interpreters built without it
        from hashlib import sha256

from _operator import _compare_digest  # hmac.compare_digest, without importing hmac

DIGEST_SIZE = 32
_BLOCK = 64
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) of the concatenation of `parts`."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(key.translate(_IPAD))
    for part in parts:
        inner.update(part)
    return sha256(key.translate(_OPAD) + inner.digest()).digest()


def kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa with SHA-256 (Part 1, 11.4.10.2); `bits` is a multiple of 8 here."""
    if bits % 8:
        raise ValueError("KDFa: only whole bytes are used")
    tail = b"\0" + context_u + context_v + struct.pack(">I", bits)
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac_sha256(key, struct.pack(">I", counter), label, tail)
        counter += 1
    return out[:bits // 8]


def kdfe(z: bytes, label: bytes, party_u: bytes, party_v: bytes) -> bytes:
    """KDFe with SHA-256 for 256 bits, one round (Part 1, 11.4.10.3)."""
    return sha256(struct.pack(">I", 1) + z + label + b"\0" + party_u + party_v).digest()


def cp_hash(command_code: int, names: tuple, parameters: bytes) -> bytes:
    """cpHash: H(commandCode || Name of each handle || command parameters)."""
    return sha256(struct.pack(">I", command_code) + b"".join(names) + parameters).digest()


def rp_hash(command_code: int, parameters: bytes) -> bytes:
    """rpHash of a successful response: H(TPM_RC_SUCCESS || commandCode || parameters)."""
    return sha256(struct.pack(">II", 0, command_code) + parameters).digest()


class SaltedSession:
    """A started HMAC session: its TPM handle, session key and the TPM's last nonce.

    One command per session: a session is started, used once (without
    continueSession, so the TPM flushes it after a successful command) and
    forgotten. `authorise` and `check_response` take the authValue of the entity
    the command is authorised for (the PIN, for an NV_Read of the PIN index).
    """

    __slots__ = ("_key", "_nonce_caller", "_nonce_tpm", "handle")

    def __init__(self, handle: TpmHandle, salt: bytes, nonce_caller: bytes, nonce_tpm: bytes) -> None:
        self.handle = handle
        # An unsalted, unbound session (salt b"", the owner's: Tpm.owner_authorisation)
        # has an empty sessionKey (Part 1, 19.6.8): its HMACs are keyed by the authValue.
        self._key = kdfa(salt, b"ATH", nonce_tpm, nonce_caller, DIGEST_SIZE * 8) if salt else b""
        self._nonce_tpm = nonce_tpm
        self._nonce_caller = b""

    def authorise(self, cp: bytes, auth_value: bytes, attributes: int, nonce_caller: bytes):
        """The command's (nonceCaller, HMAC) for cpHash `cp`."""
        self._nonce_caller = nonce_caller
        mac = hmac_sha256(self._key + auth_value, cp, nonce_caller, self._nonce_tpm,
                          bytes((attributes,)))
        return nonce_caller, mac

    def check_response(self, rp: bytes, auth_value: bytes, nonce_tpm: bytes, attributes: int,
                       mac: bytes) -> None:
        """Accept the response's authorisation or raise TpmUnavailable.

        Never let an unauthenticated answer through: whoever sits between us and the
        TPM could otherwise answer "PIN correct" to any PIN.
        """
        expected = hmac_sha256(self._key + auth_value, rp, nonce_tpm, self._nonce_caller,
                               bytes((attributes,)))
        if not _compare_digest(expected, mac):
            raise errors.TpmUnavailable("the TPM's answer failed its HMAC check")
        self._nonce_tpm = nonce_tpm

    def unmask_response(self, data: bytes, auth_value: bytes) -> bytes:
        """Undo XOR parameter encryption of a response's first parameter (Part 1, 21.2).

        Call after `check_response`, which records the response's nonceTPM.
        """
        if not data:
            return data
        mask = kdfa(self._key + auth_value, b"XOR", self._nonce_tpm, self._nonce_caller,
                    8 * len(data))
        return bytes(a ^ b for a, b in zip(data, mask))
