"""The PIN check's TPM commands through SAPI, with our own session crypto.

These are the only commands on the login path: NV_ReadPublic, NV_Read (as owner, or
with the PIN), and for a salted session ReadPublic of the salt key (or CreatePrimary
and FlushContext when there is no persistent one) and StartAuthSession. They run on ESYS's own SAPI context (`Tpm.sys`), so they share the
`Tpm`'s one connection. ESYS computes nothing for them: its tpm2-tss 3.2.1 crypto
costs ~0.25 ms per hash (see session_crypto.py); ours costs microseconds.

The salt key: our storage primary template (tpm.storage_primary_template), either
persistent at SALT_KEY_HANDLE (made by `pinutil setup`, see persist_salt_key) or, when
that is missing or not the recorded key, created for the check and flushed (same
template, same owner seed: same key, same Name). The persistent copy saves a
CreatePrimary per login: ~0.5 ms on swtpm, tens of ms on TPM chips.

Nothing the TPM says about the key is believed: whoever can alter its answers could
offer their own key (see salt_key.py). The session is salted only with a key whose
Name, computed here from the public area the ECDH will use, equals the Name root
recorded; otherwise the check fails (TpmUnavailable) before any PIN-dependent byte
is sent. The other answers on the path need no trust: a forged NV_ReadPublic changes
the Name in the cpHash (the TPM then refuses the HMAC), a forged nonceTPM or handle
only makes the command fail, and the NV_Read answer is believed only with a response
HMAC that needs the session key (ECDH with the recorded key) and the PIN.

The handles here are raw TPM handles, not ESYS_TRs. Nothing here resends a PIN.
"""
import os
import struct

from pinutil import errors
from pinutil.pin.salt_key import RECORD_COMMAND
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.context import (
    NvPublic,
    Tpm,
    fill_tpm2b,
    storage_primary_name,
    storage_primary_template,
    wipe_tpm2b,
)
from pinutil.tpm.session_crypto import (
    DIGEST_SIZE,
    SaltedSession,
    cp_hash,
    kdfe,
    rp_hash,
)

_P256_BYTES = 32
_LAYER_MASK = 0xFF0000  # a non-zero layer: the TSS, not the TPM, returned the code
# Persistent handle of our salt key: next to the master key (0x81000081, pinpam's), not
# pinpam's RSA SRK at 0x81000080.
SALT_KEY_HANDLE = 0x81000082
# The check's only session attribute: ENCRYPT (the response's data parameter is
# XOR-masked). No continueSession: the TPM flushes the session after a good command.
CHECK_SESSION_ATTRIBUTES = lib.TPMA_SESSION_ENCRYPT
_NO_RECORD = ("no recorded salt key Name: a PIN cannot be sent safely "
              f"(root must run `{RECORD_COMMAND}`)")


def read_nv_public(tpm: Tpm, handle: int):
    """(NvPublic, Name) of the NV index at `handle`, or None if nothing is there."""
    pub = ffi.new("TPM2B_NV_PUBLIC *")
    name = ffi.new("TPM2B_NAME *")
    if not tpm.send_if_present("NV_ReadPublic", lib.Tss2_Sys_NV_ReadPublic(
            tpm.sys, handle, ffi.NULL, pub, name, ffi.NULL)):
        return None
    p = pub.nvPublic
    public = NvPublic(handle=p.nvIndex, name_alg=p.nameAlg, attributes=p.attributes,
                      auth_policy=bytes(ffi.buffer(p.authPolicy.buffer, p.authPolicy.size)),
                      data_size=p.dataSize)
    return public, bytes(ffi.buffer(name.name, name.size))


def read_nv_as_owner(tpm: Tpm, handle: int, size: int) -> bytes:
    """NV_Read authorised by the owner hierarchy (empty owner password). No PIN."""
    return _nv_read(tpm, lib.TPM2_RH_OWNER, handle, size, _password_auth(b""))[0]


def read_nv_with_password(tpm: Tpm, handle: int, size: int, auth_value: bytes) -> bytes:
    """NV_Read authorised by the index's authValue in a password session (in clear)."""
    auths = _password_auth(auth_value)
    try:
        return _nv_read(tpm, handle, handle, size, auths)[0]
    finally:
        wipe_tpm2b(auths.auths[0].hmac)


def read_nv_with_session(tpm: Tpm, handle: int, name: bytes, size: int, auth_value: bytes,
                         session: SaltedSession) -> bytes:
    """NV_Read authorised by the index's authValue through a salted HMAC session.

    `name` is the index's Name as verified by the caller: it goes into the cpHash,
    so the TPM refuses the HMAC if the index is not the one the caller checked.
    The response is authenticated before its data is believed.
    """
    params = struct.pack(">HH", size, 0)
    cp = cp_hash(lib.TPM2_CC_NV_Read, (name, name), params)
    nonce, mac = session.authorise(cp, auth_value, CHECK_SESSION_ATTRIBUTES,
                                   os.urandom(DIGEST_SIZE))
    auths = ffi.new("TSS2L_SYS_AUTH_COMMAND *")
    auths.count = 1
    entry = auths.auths[0]
    entry.sessionHandle = session.handle
    fill_tpm2b(entry.nonce, nonce)
    entry.sessionAttributes = CHECK_SESSION_ATTRIBUTES
    fill_tpm2b(entry.hmac, mac)
    data, reply = _nv_read(tpm, handle, handle, size, auths)
    answer = reply.auths[0]
    session.check_response(
        rp_hash(lib.TPM2_CC_NV_Read, struct.pack(">H", len(data)) + data), auth_value,
        bytes(ffi.buffer(answer.nonce.buffer, answer.nonce.size)), answer.sessionAttributes,
        bytes(ffi.buffer(answer.hmac.buffer, answer.hmac.size)))
    return session.unmask_response(data, auth_value)


def start_salted_session(tpm: Tpm, salt_key_name: bytes | None) -> SaltedSession:
    """A fresh HMAC session, SHA-256, XOR parameter encryption, salted by ECDH with our
    salt key: the persistent one, or a transient copy flushed before returning. Either
    must have exactly `salt_key_name` (the recorded Name), else TpmUnavailable."""
    if not salt_key_name:
        raise errors.TpmUnavailable(_NO_RECORD)
    key, key_x, key_y, transient = _recorded_salt_key(tpm, salt_key_name)
    try:
        qx, qy, z = (ffi.new("unsigned char[32]") for _ in range(3))
        if not lib.pinutil_p256_ecdh(key_x, key_y, qx, qy, z):
            raise errors.TpmUnavailable("the TPM's salt key is not a valid P-256 point")
        ours_x, ours_y = bytes(qx), bytes(qy)
        salt = kdfe(bytes(z), b"SECRET", ours_x, key_x)
        ffi.memmove(z, b"\0" * _P256_BYTES, _P256_BYTES)
        secret = ffi.new("TPM2B_ENCRYPTED_SECRET *")
        fill_tpm2b(secret, struct.pack(">H", _P256_BYTES) + ours_x
                   + struct.pack(">H", _P256_BYTES) + ours_y, field="secret")
        nonce_caller = os.urandom(DIGEST_SIZE)
        nonce = ffi.new("TPM2B_NONCE *")
        fill_tpm2b(nonce, nonce_caller)
        sym = ffi.new("TPMT_SYM_DEF *")
        sym.algorithm = lib.TPM2_ALG_XOR
        sym.keyBits.exclusiveOr = lib.TPM2_ALG_SHA256
        handle = ffi.new("TPMI_SH_AUTH_SESSION *")
        nonce_tpm = ffi.new("TPM2B_NONCE *")
        tpm.send("StartAuthSession", lib.Tss2_Sys_StartAuthSession(
            tpm.sys, key, lib.TPM2_RH_NULL, ffi.NULL, nonce, secret, lib.TPM2_SE_HMAC, sym,
            lib.TPM2_ALG_SHA256, handle, nonce_tpm, ffi.NULL))
    finally:
        if transient:
            flush_quietly(tpm, key)
    return SaltedSession(handle[0], salt, nonce_caller,
                         bytes(ffi.buffer(nonce_tpm.buffer, nonce_tpm.size)))


def salt_key_name(tpm: Tpm, persist: bool = True) -> bytes:
    """The Name of this TPM's salt key (made persistent first if `persist` and the
    handle is free).

    This believes the TPM's answer: it is what root records (trust on first use),
    never what a check uses to decide whether to trust a key.
    """
    if persist:
        try:
            persist_salt_key(tpm)
        except errors.TpmUnavailable:
            pass  # not persistent: each check creates the same key (same Name)
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is not None and _is_our_salt_key(public.publicArea):
        return storage_primary_name(*_point(public.publicArea))
    handle, x, y = _create_salt_key(tpm)
    flush_quietly(tpm, handle)
    return storage_primary_name(x, y)


def require_salt_key_name(found: bytes, recorded: bytes | None) -> None:
    """For ESYS sessions salted with a key of Name `found` (enrolment)."""
    if not recorded:
        raise errors.TpmUnavailable(_NO_RECORD)
    if found != recorded:
        raise errors.TpmUnavailable(salt_key_mismatch_message(found))


def salt_key_mismatch_message(found: bytes) -> str:
    return ("the TPM's salt key is not the recorded one (its Name is "
            f"{found.hex()[:16]}...): the TPM was cleared or replaced, or something is "
            "altering the TPM's answers; refusing to send a PIN. If the TPM was cleared "
            f"on purpose, root runs `{RECORD_COMMAND}`")


def persistent_salt_key_state(tpm: Tpm) -> str:
    """"ours", "absent", or "foreign" (something else holds SALT_KEY_HANDLE)."""
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is None:
        return "absent"
    return "ours" if _is_our_salt_key(public.publicArea) else "foreign"


def persist_salt_key(tpm: Tpm) -> str:
    """Make our salt key persistent if SALT_KEY_HANDLE is free; the resulting state.

    Owner EvictControl (empty owner password). Best effort: without it every check
    creates the key, which is slower, not weaker. Never replaces a foreign object.
    """
    state = persistent_salt_key_state(tpm)
    if state != "absent":
        return state
    primary = tpm.storage_primary()
    try:
        persistent = ffi.new("ESYS_TR *")
        tpm.send("EvictControl", lib.Esys_EvictControl(
            tpm.esys, lib.ESYS_TR_RH_OWNER, primary, lib.ESYS_TR_PASSWORD, lib.ESYS_TR_NONE,
            lib.ESYS_TR_NONE, SALT_KEY_HANDLE, persistent))
        tpm.close_tr(persistent[0])
    finally:
        tpm.flush_quietly(primary)
    return "ours"


def flush_quietly(tpm: Tpm, handle: int) -> None:
    """FlushContext of a raw handle for clean-up paths, on a fresh connection if the
    failure that brought us here left SAPI unusable. A vanished handle or a dead TPM
    is no error here (without a resource manager a handle we cannot flush stays
    loaded; with /dev/tpmrm0 the kernel flushes it when we close)."""
    for attempt in range(2):
        try:
            rc = lib.Tss2_Sys_FlushContext(tpm.sys, handle)
        except errors.TpmUnavailable:
            return
        if rc == 0 or not rc & _LAYER_MASK or attempt:
            tpm.commands_sent += 1
            return  # flushed, or the TPM itself refused (e.g. TPM_RC_HANDLE: gone)
        try:
            tpm.reconnect()  # a TSS-layer failure: the context is stuck, not the TPM
        except errors.TpmUnavailable:
            return


# ---- helpers
def _recorded_salt_key(tpm: Tpm, recorded: bytes):
    """(handle, x, y, transient) of a salt key whose Name is `recorded`: the persistent
    one if it is, else a transient copy (flushed here if it is not either)."""
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is not None and _is_our_salt_key(public.publicArea):
        x, y = _point(public.publicArea)
        if storage_primary_name(x, y) == recorded:
            return SALT_KEY_HANDLE, x, y, False
    handle, x, y = _create_salt_key(tpm)
    found = storage_primary_name(x, y)
    if found != recorded:
        flush_quietly(tpm, handle)
        raise errors.TpmUnavailable(salt_key_mismatch_message(found))
    return handle, x, y, True


def _read_public(tpm: Tpm, handle: int):
    """The TPM2B_PUBLIC of the object at `handle`, or None if nothing is there.

    (The owner, not its publicArea: a cffi field view does not keep its owner alive.)
    """
    out_public = ffi.new("TPM2B_PUBLIC *")
    if not tpm.send_if_present("ReadPublic", lib.Tss2_Sys_ReadPublic(
            tpm.sys, handle, ffi.NULL, out_public, ffi.new("TPM2B_NAME *"),
            ffi.new("TPM2B_NAME *"), ffi.NULL)):
        return None
    return out_public


def _is_our_salt_key(area) -> bool:
    """Exactly our storage primary template (any unique point of the right size)."""
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
            and area.unique.ecc.x.size == _P256_BYTES and area.unique.ecc.y.size == _P256_BYTES)


def _point(area) -> tuple[bytes, bytes]:
    point = area.unique.ecc
    return (bytes(ffi.buffer(point.x.buffer, _P256_BYTES)),
            bytes(ffi.buffer(point.y.buffer, _P256_BYTES)))


def _create_salt_key(tpm: Tpm):
    """CreatePrimary of the storage primary template: (handle, x, y)."""
    owner = _password_auth(b"")
    handle = ffi.new("TPM2_HANDLE *")
    out_public = ffi.new("TPM2B_PUBLIC *")
    tpm.send("CreatePrimary", lib.Tss2_Sys_CreatePrimary(
        tpm.sys, lib.TPM2_RH_OWNER, owner, ffi.new("TPM2B_SENSITIVE_CREATE *"),
        storage_primary_template(), ffi.new("TPM2B_DATA *"), ffi.new("TPML_PCR_SELECTION *"),
        handle, out_public, ffi.new("TPM2B_CREATION_DATA *"), ffi.new("TPM2B_DIGEST *"),
        ffi.new("TPMT_TK_CREATION *"), ffi.new("TPM2B_NAME *"),
        ffi.new("TSS2L_SYS_AUTH_RESPONSE *")))
    if not _is_our_salt_key(out_public.publicArea):
        flush_quietly(tpm, handle[0])
        raise errors.TpmUnavailable("the TPM returned a malformed salt key")
    return (handle[0], *_point(out_public.publicArea))


def _nv_read(tpm: Tpm, auth_handle: int, handle: int, size: int, auths):
    data = ffi.new("TPM2B_MAX_NV_BUFFER *")
    reply = ffi.new("TSS2L_SYS_AUTH_RESPONSE *")
    tpm.send("NV_Read", lib.Tss2_Sys_NV_Read(
        tpm.sys, auth_handle, handle, auths, size, 0, data, reply))
    if data.size != size or reply.count != 1:
        raise errors.TpmUnavailable("the TPM returned a malformed NV_Read answer")
    return bytes(ffi.buffer(data.buffer, data.size)), reply


def _password_auth(value: bytes):
    auths = ffi.new("TSS2L_SYS_AUTH_COMMAND *")
    auths.count = 1
    auths.auths[0].sessionHandle = lib.TPM2_RS_PW
    fill_tpm2b(auths.auths[0].hmac, value)
    return auths
