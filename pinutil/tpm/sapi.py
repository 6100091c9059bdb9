"""The PIN check's TPM commands through SAPI, with our own session crypto.

The login path sends only these commands: NV_ReadPublic, NV_Read (as owner through an
unsalted HMAC session, see Tpm.owner_authorisation, or with the PIN), for the master key's token ReadPublic and HMAC, and for a salted session
ReadPublic of the salt key (or CreatePrimary and FlushContext when there is no
persistent one: Tpm.create_storage_primary, through SAPI too) and StartAuthSession. They run on ESYS's own SAPI context (`Tpm.sys`), so
they share the `Tpm`'s one connection, and send through `Tpm.send` like every other
command (errors: tpm/rc.py). ESYS computes nothing for them: its tpm2-tss 3.2.1
crypto costs ~0.25 ms per hash (see session_crypto.py); ours costs microseconds.

The salt key: our storage primary (structs.py), either persistent at SALT_KEY_HANDLE
(made by `pinutil setup`, see persist_salt_key) or, when that is missing or not the
recorded key, created for the check and flushed (same template, same owner seed:
same key, same Name). The persistent copy saves a CreatePrimary per login: ~0.5 ms
on swtpm, tens of ms on TPM chips.

Nothing the TPM says about the key is believed: whoever can alter its answers could
offer their own key (see pin/salt_key.py). The session is salted only with a key
whose Name, computed here from the public area the ECDH will use, equals the Name
root recorded; otherwise the check fails (TpmUnavailable) before any PIN-dependent
byte is sent. The other answers on the path need no trust: a forged NV_ReadPublic
changes the Name in the cpHash (the TPM then refuses the HMAC), a forged nonceTPM or
handle only makes the command fail, and the NV_Read answer is believed only with a
response HMAC that needs the session key (ECDH with the recorded key) and the PIN.

The handles here are TPM handles (`TpmHandle`), not ESYS_TRs. Nothing here resends a PIN.
"""
import os
import struct

from pinutil import errors
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.context import OWNER_NAME, Tpm
from pinutil.tpm.handles import TpmHandle
from pinutil.tpm.session_crypto import (
    DIGEST_SIZE,
    SaltedSession,
    cp_hash,
    kdfe,
    rp_hash,
)
from pinutil.tpm.structs import (
    P256_BYTES,
    NvPublic,
    ecc_point,
    fill_tpm2b,
    is_storage_primary,
    password_auth,
    storage_primary_name,
    wipe_tpm2b,
)

# Persistent handle of our salt key: next to the master key (0x81000081, pinpam's), not
# pinpam's RSA SRK at 0x81000080.
SALT_KEY_HANDLE = 0x81000082
# The check's only session attribute: ENCRYPT (the response's data parameter is
# XOR-masked). No continueSession: the TPM flushes the session after a good command.
CHECK_SESSION_ATTRIBUTES = lib.TPMA_SESSION_ENCRYPT
# What root runs to record the salt key (pinutil/pin/salt_key.py): named here, where
# the refusals are worded, so the TPM layer never imports the PIN layer above it.
RECORD_COMMAND = "pinutil salt-key record"
_NO_RECORD = ("no recorded salt key Name: a PIN cannot be sent safely "
              f"(root must run `{RECORD_COMMAND}`)")


def read_nv_public(tpm: Tpm, handle: int):
    """(NvPublic, Name) of the NV index at `handle`, or None if nothing is there."""
    pub = ffi.new("TPM2B_NV_PUBLIC *")
    name = ffi.new("TPM2B_NAME *")
    if not tpm.send_if_present("NV_ReadPublic", lib.Tss2_Sys_NV_ReadPublic(
            tpm.sys, handle, ffi.NULL, pub, name, ffi.NULL)):
        return None
    return NvPublic.from_tpms(pub.nvPublic), bytes(ffi.buffer(name.name, name.size))


def read_nv_as_owner(tpm: Tpm, handle: int, name: bytes, size: int) -> bytes:
    """NV_Read authorised by the owner hierarchy (Tpm.owner_auth(): never on the bus,
    see Tpm.owner_authorisation). No PIN. `name`: the index's Name, for the cpHash (a
    wrong one makes the TPM refuse the HMAC). With a password set, the answer is
    believed only with a response HMAC keyed with it."""
    params = struct.pack(">HH", size, 0)
    auths, session = tpm.owner_authorisation(lib.TPM2_CC_NV_Read, (OWNER_NAME, name), params)
    try:
        data, reply = _nv_read(tpm, lib.TPM2_RH_OWNER, handle, size, auths, as_owner=True)
    except BaseException:
        if session is not None:  # a refused command leaves the session loaded
            tpm.flush_quietly(session.handle)
        raise
    if session is not None:
        answer = reply.auths[0]
        session.check_response(
            rp_hash(lib.TPM2_CC_NV_Read, struct.pack(">H", len(data)) + data),
            tpm.owner_auth(), bytes(ffi.buffer(answer.nonce.buffer, answer.nonce.size)),
            answer.sessionAttributes, bytes(ffi.buffer(answer.hmac.buffer, answer.hmac.size)))
    return data


def read_nv_with_password(tpm: Tpm, handle: int, size: int, auth_value: bytes) -> bytes:
    """NV_Read authorised by the index's authValue in a password session (in clear)."""
    auths = password_auth(auth_value)
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
    auths = _session_auth(session, cp_hash(lib.TPM2_CC_NV_Read, (name, name), params),
                          auth_value)
    data, reply = _nv_read(tpm, handle, handle, size, auths)
    return _unmasked_answer(session, lib.TPM2_CC_NV_Read, data, auth_value, reply)


def read_public(tpm: Tpm, handle: int):
    """(TPM2B_PUBLIC, Name) of the object at `handle`, or None if nothing is there.
    Believed only as far as the Name goes into a later command's cpHash."""
    out_public = ffi.new("TPM2B_PUBLIC *")
    name = ffi.new("TPM2B_NAME *")
    if not tpm.send_if_present("ReadPublic", lib.Tss2_Sys_ReadPublic(
            tpm.sys, handle, ffi.NULL, out_public, name, ffi.new("TPM2B_NAME *"), ffi.NULL)):
        return None
    return out_public, bytes(ffi.buffer(name.name, name.size))


def hmac_with_session(tpm: Tpm, handle: int, name: bytes, data: bytes, auth_value: bytes,
                      session: SaltedSession) -> bytes:
    """HMAC-SHA256 of `data` with the keyed-hash object at `handle` (Name `name`, as the
    caller verified it), authorised by its `auth_value` through the salted `session`.

    The response's outHMAC comes back XOR-encrypted (ENCRYPT), so the result never
    crosses the bus in clear, and is believed only with a response HMAC that needs the
    session key and the authValue. `data` itself (a user name) is sent in clear."""
    buffer = ffi.new("TPM2B_MAX_BUFFER *")
    fill_tpm2b(buffer, data)
    params = struct.pack(">H", len(data)) + data + struct.pack(">H", lib.TPM2_ALG_SHA256)
    auths = _session_auth(session, cp_hash(lib.TPM2_CC_HMAC, (name,), params), auth_value)
    out = ffi.new("TPM2B_DIGEST *")
    reply = ffi.new("TSS2L_SYS_AUTH_RESPONSE *")
    tpm.send("HMAC", lib.Tss2_Sys_HMAC(tpm.sys, handle, auths, buffer, lib.TPM2_ALG_SHA256,
                                       out, reply))
    if out.size != DIGEST_SIZE or reply.count != 1:
        raise errors.TpmUnavailable("the TPM returned a malformed HMAC answer")
    return _unmasked_answer(session, lib.TPM2_CC_HMAC, bytes(ffi.buffer(out.buffer, out.size)),
                            auth_value, reply)


def _session_auth(session: SaltedSession, cp: bytes, auth_value: bytes):
    """The command's one authorisation: `session`, ENCRYPT only, its HMAC over `cp`."""
    nonce, mac = session.authorise(cp, auth_value, CHECK_SESSION_ATTRIBUTES,
                                   os.urandom(DIGEST_SIZE))
    auths = ffi.new("TSS2L_SYS_AUTH_COMMAND *")
    auths.count = 1
    entry = auths.auths[0]
    entry.sessionHandle = session.handle
    fill_tpm2b(entry.nonce, nonce)
    entry.sessionAttributes = CHECK_SESSION_ATTRIBUTES
    fill_tpm2b(entry.hmac, mac)
    return auths


def _unmasked_answer(session: SaltedSession, command_code: int, masked: bytes,
                     auth_value: bytes, reply) -> bytes:
    """The response's one (sized) parameter, `masked`, in clear, once its response HMAC
    checks out (TpmUnavailable otherwise)."""
    answer = reply.auths[0]
    session.check_response(
        rp_hash(command_code, struct.pack(">H", len(masked)) + masked), auth_value,
        bytes(ffi.buffer(answer.nonce.buffer, answer.nonce.size)), answer.sessionAttributes,
        bytes(ffi.buffer(answer.hmac.buffer, answer.hmac.size)))
    return session.unmask_response(masked, auth_value)


def start_salted_session(tpm: Tpm, salt_key_name: bytes | None) -> SaltedSession:
    """A fresh HMAC session, SHA-256, XOR parameter encryption, salted by ECDH with our
    salt key: the persistent one, or a transient copy flushed before returning. Either
    must have exactly `salt_key_name` (the recorded Name), else TpmUnavailable."""
    if not salt_key_name:
        raise errors.TpmUnavailable(_NO_RECORD)
    return _salted_session(tpm, *_recorded_salt_key(tpm, salt_key_name))


def start_unverified_salted_session(tpm: Tpm) -> SaltedSession:
    """start_salted_session() with whatever salt key the TPM offers, when none is
    recorded (the master key's token on a machine without PINs). It keeps a secret off
    the bus for a passive observer only: whoever can alter the TPM's answers could offer
    their own key. Never use it for a PIN."""
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is not None and is_storage_primary(public.publicArea):
        return _salted_session(tpm, SALT_KEY_HANDLE, *ecc_point(public.publicArea), False)
    handle, x, y = tpm.create_storage_primary()
    return _salted_session(tpm, handle, x, y, True)


def _salted_session(tpm: Tpm, key: int, key_x: bytes, key_y: bytes,
                    transient: bool) -> SaltedSession:
    """StartAuthSession salted with the P-256 key `key` at (key_x, key_y); a
    `transient` key is flushed before returning."""
    try:
        qx, qy, z = (ffi.new("unsigned char[32]") for _ in range(3))
        if not lib.pinutil_p256_ecdh(key_x, key_y, qx, qy, z):
            raise errors.TpmUnavailable("the TPM's salt key is not a valid P-256 point")
        ours_x, ours_y = bytes(qx), bytes(qy)
        salt = kdfe(bytes(z), b"SECRET", ours_x, key_x)
        ffi.memmove(z, b"\0" * P256_BYTES, P256_BYTES)
        secret = ffi.new("TPM2B_ENCRYPTED_SECRET *")
        fill_tpm2b(secret, struct.pack(">H", P256_BYTES) + ours_x
                   + struct.pack(">H", P256_BYTES) + ours_y, field="secret")
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
            tpm.flush_quietly(key)
    return SaltedSession(TpmHandle(handle[0]), salt, nonce_caller,
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
    if public is not None and is_storage_primary(public.publicArea):
        return storage_primary_name(*ecc_point(public.publicArea))
    handle, x, y = tpm.create_storage_primary()
    tpm.flush_quietly(handle)
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
            f"on purpose, root runs `{RECORD_COMMAND}`: every PIN enrolled before is void "
            "then (a Clear deleted them all) and users enrol again")


def persistent_salt_key_state(tpm: Tpm) -> str:
    """"ours", "absent", or "foreign" (something else holds SALT_KEY_HANDLE)."""
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is None:
        return "absent"
    return "ours" if is_storage_primary(public.publicArea) else "foreign"


def persist_salt_key(tpm: Tpm) -> str:
    """Make our salt key persistent if SALT_KEY_HANDLE is free; the resulting state.

    Owner EvictControl (Tpm.owner_auth()). Best effort: without it every check
    creates the key, which is slower, not weaker. Never replaces a foreign object.
    """
    state = persistent_salt_key_state(tpm)
    if state != "absent":
        return state
    primary = tpm.storage_primary()
    try:
        tpm.close_tr(tpm.evict_control(primary, SALT_KEY_HANDLE))
    finally:
        tpm.flush_quietly(primary)
    return "ours"


# ---- helpers
def _recorded_salt_key(tpm: Tpm, recorded: bytes):
    """(handle, x, y, transient) of a salt key whose Name is `recorded`: the persistent
    one if it is, else a transient copy (flushed here if it is not either)."""
    public = _read_public(tpm, SALT_KEY_HANDLE)
    if public is not None and is_storage_primary(public.publicArea):
        x, y = ecc_point(public.publicArea)
        if storage_primary_name(x, y) == recorded:
            return SALT_KEY_HANDLE, x, y, False
    handle, x, y = tpm.create_storage_primary()
    found = storage_primary_name(x, y)
    if found != recorded:
        tpm.flush_quietly(handle)
        raise errors.TpmUnavailable(salt_key_mismatch_message(found))
    return handle, x, y, True


def _read_public(tpm: Tpm, handle: int):
    """The TPM2B_PUBLIC of the object at `handle`, or None if nothing is there.

    (The owner, not its publicArea: a cffi field view does not keep its owner alive.)
    """
    found = read_public(tpm, handle)
    return None if found is None else found[0]


def _nv_read(tpm: Tpm, auth_handle: int, handle: int, size: int, auths,
             as_owner: bool = False):
    data = ffi.new("TPM2B_MAX_NV_BUFFER *")
    reply = ffi.new("TSS2L_SYS_AUTH_RESPONSE *")
    send = tpm.send_as_owner if as_owner else tpm.send
    send("NV_Read", lib.Tss2_Sys_NV_Read(
        tpm.sys, auth_handle, handle, auths, size, 0, data, reply))
    if data.size != size or reply.count != 1:
        raise errors.TpmUnavailable("the TPM returned a malformed NV_Read answer")
    return bytes(ffi.buffer(data.buffer, data.size)), reply
