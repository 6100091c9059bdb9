"""Our session crypto (session_crypto.py, the P-256 helper, tpm/sapi.py) against
independent oracles (`hmac`, `cryptography`) and a real swtpm.

The swtpm is the final oracle: a wrong cpHash, session key or HMAC formula makes it
refuse the command; a wrong response formula makes our check refuse its answer.
"""
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from pinutil.tpm._tss import ffi, lib

from pinutil import errors
from pinutil.pin.index import PinIndex
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm
from pinutil.tpm.session_crypto import SaltedSession, hmac_sha256, kdfa, kdfe

HANDLE = 0x01000000 + 1000
PIN = b"135790"


# ---- primitives against independent implementations ---------------------------------------
@pytest.mark.parametrize("key_size", [0, 1, 32, 63, 64, 65, 200])
def test_hmac_matches_the_standard_library(key_size):
    key, parts = os.urandom(key_size), (os.urandom(7), b"", os.urandom(100))
    assert hmac_sha256(key, *parts) == hmac.new(key, b"".join(parts), "sha256").digest()


def test_hmac_rfc4231_case_2():
    assert hmac_sha256(b"Jefe", b"what do ya want ", b"for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")


@pytest.mark.parametrize("bits", [8, 128, 256, 264, 512, 1024])
def test_kdfa_is_sp800_108_counter_mode(bits):
    """KDFa is NIST SP 800-108 counter mode with HMAC, r = L = 32 bits, counter first."""
    key, u, v = os.urandom(32), os.urandom(32), os.urandom(32)
    oracle = KBKDFHMAC(algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=bits // 8,
                       rlen=4, llen=4, location=CounterLocation.BeforeFixed,
                       label=b"ATH", context=u + v, fixed=None)
    assert kdfa(key, b"ATH", u, v, bits) == oracle.derive(key)


def test_kdfa_refuses_partial_bytes():
    with pytest.raises(ValueError):
        kdfa(b"k", b"XOR", b"", b"", 12)


def test_kdfe_is_the_concatenation_kdf():
    z, u, v = os.urandom(32), os.urandom(32), os.urandom(32)
    oracle = ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=b"SECRET\0" + u + v)
    assert kdfe(z, b"SECRET", u, v) == oracle.derive(z)


# ---- the P-256 helper --------------------------------------------------------------------
def _point(public_key):
    numbers = public_key.public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


def test_p256_ecdh_agrees_with_cryptography():
    tpm_side = ec.generate_private_key(ec.SECP256R1())
    px, py = _point(tpm_side.public_key())
    qx, qy, z = (ffi.new("unsigned char[32]") for _ in range(3))
    assert lib.pinutil_p256_ecdh(px, py, qx, qy, z) == 1
    ours = ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(qx), "big"),
                                         int.from_bytes(bytes(qy), "big"), ec.SECP256R1())
    assert tpm_side.exchange(ec.ECDH(), ours.public_key()) == bytes(z)


def test_p256_ecdh_draws_a_fresh_scalar_each_time():
    px, py = _point(ec.generate_private_key(ec.SECP256R1()).public_key())
    seen = set()
    for _ in range(3):
        qx, qy, z = (ffi.new("unsigned char[32]") for _ in range(3))
        assert lib.pinutil_p256_ecdh(px, py, qx, qy, z) == 1
        seen.add(bytes(qx))
    assert len(seen) == 3


@pytest.mark.parametrize("px, py", [
    (b"\0" * 32, b"\0" * 32),                       # the origin: not on the curve
    (b"\x01" * 32, b"\x02" * 32),                   # random coordinates
    (b"\xff" * 32, b"\xff" * 32),                   # coordinates >= p
])
def test_p256_ecdh_refuses_points_off_the_curve(px, py):
    qx, qy, z = (ffi.new("unsigned char[32]") for _ in range(3))
    assert lib.pinutil_p256_ecdh(px, py, qx, qy, z) == 0
    assert bytes(z) == b"\0" * 32


# ---- response authentication -------------------------------------------------------------
def _session_and_reply():
    session = SaltedSession(0x02000000, os.urandom(32), os.urandom(32), os.urandom(32))
    session.authorise(os.urandom(32), PIN, 0x20, os.urandom(32))
    rp, nonce_tpm = os.urandom(32), os.urandom(32)
    mac = hmac_sha256(session._key + PIN, rp, nonce_tpm, session._nonce_caller, bytes((0x20,)))
    return session, rp, nonce_tpm, mac


def test_a_genuine_response_is_accepted():
    session, rp, nonce_tpm, mac = _session_and_reply()
    session.check_response(rp, PIN, nonce_tpm, 0x20, mac)


@pytest.mark.parametrize("tamper", ["rp", "pin", "nonce", "attributes", "mac", "empty"])
def test_any_altered_response_is_refused(tamper):
    session, rp, nonce_tpm, mac = _session_and_reply()
    args = {"rp": rp, "pin": PIN, "nonce": nonce_tpm, "attributes": 0x20, "mac": mac}
    flip = {"rp": bytes([rp[0] ^ 1]) + rp[1:], "pin": b"135791",
            "nonce": nonce_tpm[:-1] + bytes([nonce_tpm[-1] ^ 0x80]), "attributes": 0x21,
            "mac": mac[:31] + bytes([mac[31] ^ 1]), "empty": b""}
    args["mac" if tamper == "empty" else tamper] = flip[tamper]
    with pytest.raises(errors.TpmUnavailable, match="HMAC"):
        session.check_response(args["rp"], args["pin"], args["nonce"], args["attributes"],
                               args["mac"])


# ---- against the swtpm -------------------------------------------------------------------
@pytest.fixture
def enrolled(swtpm):
    with Tpm(swtpm.tcti) as t:
        PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False)).define(PIN, 5)
        yield t
    assert swtpm.tools("tpm2_getcap", "handles-loaded-session").stdout.strip() == b""
    assert swtpm.tools("tpm2_getcap", "handles-transient").stdout.strip() == b""


def test_salted_read_returns_the_counter_in_clear_after_unmasking(enrolled, swtpm):
    _, name = sapi.read_nv_public(enrolled, HANDLE)
    session = sapi.start_salted_session(enrolled, sapi.salt_key_name(enrolled, persist=False))
    data = sapi.read_nv_with_session(enrolled, HANDLE, name, 8, PIN, session)
    assert struct.unpack(">II", data) == (0, 5)
    assert sapi.read_nv_as_owner(enrolled, HANDLE, name, 8) == data


@pytest.mark.parametrize("part", ["hmac", "nonce", "data"])
def test_a_forged_tpm_answer_is_never_a_correct_pin(enrolled, swtpm, monkeypatch, part):
    """Someone between us and the TPM alters the NV_Read answer: the check fails
    closed (TpmUnavailable), even though the TPM itself accepted the PIN."""
    real = sapi._nv_read

    def forge(tpm, auth_handle, handle, size, auths):
        data, reply = real(tpm, auth_handle, handle, size, auths)
        if auth_handle == handle:
            if part == "data":
                data = bytes([data[0] ^ 1]) + data[1:]
            else:
                field = getattr(reply.auths[0], part)
                field.buffer[0] ^= 1
        return data, reply

    monkeypatch.setattr(sapi, "_nv_read", forge)
    with pytest.raises(errors.TpmUnavailable, match="HMAC"):
        PinIndex(enrolled, HANDLE, sapi.salt_key_name(enrolled, persist=False)).check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


def test_a_wrong_name_makes_the_tpm_refuse_the_hmac(enrolled, swtpm):
    """The Name goes into the cpHash: the TPM refuses the HMAC and counts a failure.
    That is why PinIndex compares the Name before it ever uses a PIN."""
    _, name = sapi.read_nv_public(enrolled, HANDLE)
    wrong = name[:-1] + bytes([name[-1] ^ 1])
    session = sapi.start_salted_session(enrolled, sapi.salt_key_name(enrolled, persist=False))
    try:
        with pytest.raises(errors.TpmUnavailable):
            sapi.read_nv_with_session(enrolled, HANDLE, wrong, 8, PIN, session)
    finally:
        enrolled.flush_quietly(session.handle)
    assert swtpm.read_pin_counter(HANDLE) == (1, 5)


# ---- the persistent salt key -------------------------------------------------------------
def _persistent_handles(swtpm) -> bytes:
    return swtpm.tools("tpm2_getcap", "handles-persistent").stdout


def test_persist_salt_key_makes_ours_once_and_checks_use_it(enrolled, swtpm):
    assert sapi.persistent_salt_key_state(enrolled) == "absent"
    assert sapi.persist_salt_key(enrolled) == "ours"
    assert b"0x81000082" in _persistent_handles(swtpm)
    assert sapi.persist_salt_key(enrolled) == "ours"  # idempotent
    index = PinIndex(enrolled, HANDLE, sapi.salt_key_name(enrolled, persist=False))
    before = enrolled.commands_sent
    index.check(PIN)
    # NV_ReadPublic, ReadPublic, StartAuthSession, NV_Read: no CreatePrimary, no flush.
    assert enrolled.commands_sent - before == 4
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


@pytest.mark.parametrize("foreign", [
    ["tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "k.ctx"],   # default template: DA
    ["tpm2_createprimary", "-C", "o", "-G", "rsa", "-c", "k.ctx"],   # pinpam-style RSA SRK
])
def test_a_foreign_key_at_the_handle_is_never_used_nor_replaced(enrolled, swtpm, foreign):
    swtpm.tools(*foreign)
    swtpm.tools("tpm2_evictcontrol", "-C", "o", "-c", "k.ctx", hex(sapi.SALT_KEY_HANDLE))
    swtpm.tools("tpm2_flushcontext", "-t")
    public_before = swtpm.tools("tpm2_readpublic", "-c", hex(sapi.SALT_KEY_HANDLE)).stdout
    assert sapi.persist_salt_key(enrolled) == "foreign"
    index = PinIndex(enrolled, HANDLE, sapi.salt_key_name(enrolled, persist=False))
    before = enrolled.commands_sent
    index.check(PIN)  # a transient salt key instead
    assert enrolled.commands_sent - before == 6
    assert swtpm.tools("tpm2_readpublic", "-c", hex(sapi.SALT_KEY_HANDLE)).stdout == public_before
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


def test_sha256_is_the_interpreters_builtin_not_openssl():
    # `_sha256` became `_sha2` in Python 3.12: importing the old name there fell back to
    # hashlib, loading OpenSSL on every login (test_pin_index checks the import budget).
    from pinutil.tpm import session_crypto, structs

    assert session_crypto.sha256.__module__ in ("_sha2", "_sha256")
    assert structs.sha256 is session_crypto.sha256
