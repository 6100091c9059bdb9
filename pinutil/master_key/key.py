"""The master key: a 32-byte HMAC-SHA256 key kept in the TPM, and its life cycle.

A user's token is lowercase hex HMAC-SHA256(secret, user as UTF-8), computed by the
TPM (pinpam v0.0.5's definition, so its users keep their keyrings). The recovery copy
of the secret lives in the sealed recovery file (`pinutil.master_key.recovery`).

Design: ONE persistent handle. The HMAC key is persisted at 0x81000081 (pinpam's
handle, so a key pinpam left there keeps working). Its parent, the noDA ECC P-256
storage primary, is NOT persisted (pinpam keeps an RSA SRK at 0x81000080): it is
needed only while the secret is imported (as Create/Load parent and as the salt key of
the session that encrypts the secret on the bus), and a primary is a pure function of
its template and the owner seed, so it can be recreated whenever needed. A persistent
object needs no loaded parent to be used, so the login path never creates a primary:
it costs two TPM commands (ReadPublic via Esys_TR_FromTPMPublic, then HMAC). TPMs have
few persistent slots (swtpm: 7, shared with e.g. the OS's SRK at 0x81000001).

Key attributes: fixedTPM|fixedParent (the secret never leaves this TPM in any form
but the recovery file), userWithAuth with an empty authValue (every login must be
able to derive the token without a secret of its own), noDA (an unrelated DA lockout
must not break every login), sign (HMAC). Consequence, documented in the threat
model: whoever can send commands to the TPM (root, the `tss` group) can derive every
user's token.

This module is on the PAM login path, so the token path imports only `pinutil.tpm.context`:
not `tpm2_pytss`, not `cryptography`, not even `hashlib` (OpenSSL) or the recovery
code, which the CLI-only operations import when called.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from pinutil.errors import MasterKeyError, PinutilError
from pinutil.record import Record
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.context import (
    RC_BAD_AUTH,
    RC_NV_SPACE,
    Tpm,
    TpmCommandError,
    check_rc,
    fill_tpm2b,
    wipe_tpm2b,
)

RC_AUTH_FAIL = 0x08E  # TPM_RC_AUTH_FAIL: an HMAC session's authorization failed
RC_ESYS_BAD_TR = 0x70018  # TSS2_ESYS_RC_BAD_TR: an ESYS_TR the context does not know

MASTER_KEY_HANDLE = 0x81000081
DEFAULT_SEALED_FILE = "/var/pinpam/sealed_master_key"

_KEY_ATTRIBUTES = (lib.TPMA_OBJECT_FIXEDTPM | lib.TPMA_OBJECT_FIXEDPARENT
                   | lib.TPMA_OBJECT_USERWITHAUTH | lib.TPMA_OBJECT_NODA
                   | lib.TPMA_OBJECT_SIGN_ENCRYPT)
# TPM2_HMAC takes a TPM2B_MAX_BUFFER; 1024 is MAX_DIGEST_BUFFER on every TPM we know.
MAX_USER_BYTES = 1024
# HMAC'd in the TPM and in software to check which secret the TPM holds.
_PROBE = b"pinutil master-key probe"


SECRET_SIZE = 32


def software_token(secret: bytes, user: str) -> str:
    """The token computed without a TPM (recovery; the TPM must agree with this)."""
    import hashlib
    import hmac

    return hmac.new(secret, user.encode("utf-8"), hashlib.sha256).hexdigest()


def _user_bytes(user: str) -> bytes:
    data = user.encode("utf-8")
    if not data or b"\0" in data or len(data) > MAX_USER_BYTES:
        raise MasterKeyError("not a usable user name for a token")
    return data


class MasterKey:
    """The master key inside one open `Tpm`."""

    def __init__(self, tpm: Tpm, handle: int = MASTER_KEY_HANDLE) -> None:
        self.tpm = tpm
        self.handle = handle

    # -- helpers ---------------------------------------------------------------------
    def _open_persistent(self) -> int | None:
        """An ESYS_TR for our handle (one ReadPublic), or None if the slot is empty."""
        return self.tpm.tr_if_present(self.handle)

    def _require_hmac_key(self, tr: int) -> None:
        """Fail closed if the slot holds something other than an HMAC key we can use."""
        none = lib.ESYS_TR_NONE
        public = ffi.new("TPM2B_PUBLIC **")
        rc = lib.Esys_ReadPublic(self.tpm.esys, tr, none, none, none, public,
                                 ffi.NULL, ffi.NULL)
        check_rc(rc, "reading the master key's public area")
        try:
            area = public[0].publicArea
            scheme = area.parameters.keyedHashDetail.scheme
            attributes = area.objectAttributes
            usable = (area.type == lib.TPM2_ALG_KEYEDHASH
                      and attributes & lib.TPMA_OBJECT_SIGN_ENCRYPT
                      and not attributes & (lib.TPMA_OBJECT_RESTRICTED | lib.TPMA_OBJECT_DECRYPT)
                      and attributes & lib.TPMA_OBJECT_USERWITHAUTH
                      and (scheme.scheme == lib.TPM2_ALG_NULL
                           or (scheme.scheme == lib.TPM2_ALG_HMAC
                               and scheme.details.hmac.hashAlg == lib.TPM2_ALG_SHA256)))
        finally:
            lib.Esys_Free(public[0])
        if not usable:
            raise MasterKeyError(
                f"TPM handle {self.handle:#x} holds an object that is not an HMAC-SHA256 "
                "key; refusing to use or replace it")

    def _hmac(self, tr: int, data: bytes) -> bytes:
        none = lib.ESYS_TR_NONE
        buffer = ffi.new("TPM2B_MAX_BUFFER *")
        fill_tpm2b(buffer, data)
        out = ffi.new("TPM2B_DIGEST **")
        rc = lib.Esys_HMAC(self.tpm.esys, tr, lib.ESYS_TR_PASSWORD, none, none,
                           buffer, lib.TPM2_ALG_SHA256, out)
        check_rc(rc, "computing an HMAC with the master key")
        try:
            return bytes(ffi.buffer(out[0].buffer, out[0].size))
        finally:
            lib.Esys_Free(out[0])

    # -- public API ------------------------------------------------------------------
    def exists(self) -> bool:
        """True if the TPM holds a usable master key; MasterKeyError if the handle is
        taken by something else."""
        tr = self._open_persistent()
        if tr is None:
            return False
        try:
            self._require_hmac_key(tr)
        finally:
            self.tpm.close_tr(tr)
        return True

    def token_for(self, user: str) -> str:
        """The user's token (64 lowercase hex characters), computed by the TPM."""
        data = _user_bytes(user)
        tr = self._open_persistent()
        if tr is None:
            raise MasterKeyError("no master key in the TPM")
        try:
            return self._hmac(tr, data).hex()
        finally:
            self.tpm.close_tr(tr)

    def holds(self, secret: bytes) -> bool:
        """True if the TPM's master key is `secret` (compared through one HMAC)."""
        tr = self._open_persistent()
        if tr is None:
            return False
        try:
            import hashlib
            import hmac

            self._require_hmac_key(tr)
            expected = hmac.new(secret, _PROBE, hashlib.sha256).digest()
            return hmac.compare_digest(self._hmac(tr, _PROBE), expected)
        finally:
            self.tpm.close_tr(tr)

    def load_secret(self, secret: bytes, replace: bool = False) -> None:
        """Import `secret` as the persistent HMAC key. The secret crosses the bus only
        as the encrypted first parameter of TPM2_Create, in a session salted with the
        storage primary. Refuses if a key is present, unless `replace`."""
        if len(secret) != SECRET_SIZE:
            raise MasterKeyError(f"the master key must be {SECRET_SIZE} bytes")
        old = self._open_persistent()
        try:
            if old is not None:
                self._require_hmac_key(old)
                if not replace:
                    raise MasterKeyError("a master key is already in the TPM")
            new = self._create_and_load(secret)
            try:
                if old is not None:
                    evicted, old = old, None
                    self._evict(evicted)
                self._persist(new)
            finally:
                self.tpm.flush_quietly(new)
        finally:
            if old is not None:
                self.tpm.close_tr(old)
        if not self.holds(secret):  # read back: the TPM must now agree with the file
            raise MasterKeyError("the TPM's master key does not match after loading it")

    def clear(self) -> bool:
        """Evict the master key from the TPM; True if there was one."""
        tr = self._open_persistent()
        if tr is None:
            return False
        try:
            self._require_hmac_key(tr)
        except BaseException:
            self.tpm.close_tr(tr)
            raise
        self._evict(tr)
        return True

    # -- import steps ----------------------------------------------------------------
    def _template(self):
        public = ffi.new("TPM2B_PUBLIC *")
        area = public.publicArea
        area.type = lib.TPM2_ALG_KEYEDHASH
        area.nameAlg = lib.TPM2_ALG_SHA256
        area.objectAttributes = _KEY_ATTRIBUTES
        area.authPolicy.size = 0
        area.parameters.keyedHashDetail.scheme.scheme = lib.TPM2_ALG_HMAC
        area.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = lib.TPM2_ALG_SHA256
        area.unique.keyedHash.size = 0
        return public

    def _create_and_load(self, secret: bytes) -> int:
        """Create the HMAC object from `secret` under a fresh storage primary and load
        it; returns the transient ESYS_TR (the caller flushes it)."""
        ctx = self.tpm.esys
        none = lib.ESYS_TR_NONE
        sensitive = ffi.new("TPM2B_SENSITIVE_CREATE *")
        sensitive.sensitive.userAuth.size = 0
        fill_tpm2b(sensitive.sensitive.data, secret)
        outside = ffi.new("TPM2B_DATA *")
        pcrs = ffi.new("TPML_PCR_SELECTION *")
        private = ffi.new("TPM2B_PRIVATE **")
        public = ffi.new("TPM2B_PUBLIC **")
        loaded = ffi.new("ESYS_TR *")
        primary = self.tpm.storage_primary()
        try:
            # DECRYPT: the TPM decrypts Create's first parameter, inSensitive, which
            # holds the secret; ENCRYPT protects outPrivate on the way back.
            session = self.tpm.salted_session(primary)
            try:
                rc = lib.Esys_Create(ctx, primary, session, none, none, sensitive,
                                     self._template(), outside, pcrs, private, public,
                                     ffi.NULL, ffi.NULL, ffi.NULL)
                check_rc(rc, "creating the master key object")
                try:
                    rc = lib.Esys_Load(ctx, primary, session, none, none, private[0],
                                       public[0], loaded)
                    check_rc(rc, "loading the master key object")
                finally:
                    lib.Esys_Free(private[0])
                    lib.Esys_Free(public[0])
            finally:
                self.tpm.flush_quietly(session)
        finally:
            # Best effort only: Python cannot promise the bytes are gone elsewhere.
            wipe_tpm2b(sensitive.sensitive.data)
            self.tpm.flush_quietly(primary)
        return loaded[0]

    def _evict_control(self, tr: int, what: str) -> int:
        """TPM2_EvictControl as owner (empty owner password, as pinpam assumes)."""
        out = ffi.new("ESYS_TR *")
        rc = lib.Esys_EvictControl(self.tpm.esys, lib.ESYS_TR_RH_OWNER, tr,
                                   lib.ESYS_TR_PASSWORD, lib.ESYS_TR_NONE,
                                   lib.ESYS_TR_NONE, self.handle, out)
        try:
            check_rc(rc, what)
        except TpmCommandError as e:
            if e.code in (RC_BAD_AUTH, RC_AUTH_FAIL):
                raise MasterKeyError(f"{what}: the TPM owner hierarchy has a password, "
                                     "which pinutil does not support") from None
            if e.code == RC_NV_SPACE:
                raise MasterKeyError(f"{what}: the TPM has no free persistent handle") \
                    from None
            raise
        return out[0]

    def _persist(self, transient: int) -> None:
        self.tpm.close_tr(self._evict_control(transient, "making the master key persistent"))

    def _evict(self, persistent: int) -> None:
        """Evict the key and forget its ESYS_TR, which the caller must not close again.

        tpm2-tss 3.x leaves the ESYS_TR of an evicted object open; 4.x closes it inside
        Esys_EvictControl (tpm2-tss PR #2667), and a second close fails with
        TSS2_ESYS_RC_BAD_TR. ESYS_TR numbers are never reused, so BAD_TR here can only
        mean "already closed"."""
        try:
            self._evict_control(persistent, "evicting the master key")
        finally:
            try:
                self.tpm.close_tr(persistent)
            except TpmCommandError as e:
                if e.code != RC_ESYS_BAD_TR:
                    raise


# --- operations used by the `pinutil master-key` command -------------------------------

def user_token(tcti: str, user: str, timeout_ms: int | None = None) -> str:
    """The token for `user` from the TPM at `tcti` (the PAM module's one call)."""
    with Tpm(tcti, timeout_ms=timeout_ms) as tpm:
        return MasterKey(tpm).token_for(user)


def init_master_key(tcti: str, sealed_path: str, confirm_phrase: Callable[[str], None],
                    replace: bool = False) -> None:
    """Generate a secret and a recovery phrase, show the phrase through
    `confirm_phrase` (which raises to abort; nothing is written then), write the
    sealed recovery file, then load the secret into the TPM.

    Refuses if a key is in the TPM or the file exists, unless `replace`. The file is
    written before the TPM is touched, so the TPM never holds a key without its
    recovery copy."""
    import secrets

    from pinutil.master_key import recovery

    with Tpm(tcti) as tpm:
        key = MasterKey(tpm)
        if not replace:
            if key.exists():
                raise MasterKeyError(
                    "a master key is already in the TPM (use --replace to replace it)")
            if os.path.lexists(sealed_path):
                raise MasterKeyError(
                    f"{sealed_path} already exists (use --replace to replace it)")
        secret = secrets.token_bytes(SECRET_SIZE)
        phrase = recovery.new_phrase()
        confirm_phrase(phrase)
        recovery.write_sealed_file(sealed_path, recovery.seal(secret, phrase))
        try:
            key.load_secret(secret, replace=replace)
        except MasterKeyError as e:
            raise MasterKeyError(
                f"{e}; the recovery file {sealed_path} is written: "
                "run `pinutil master-key import` to load it") from None


def import_master_key(tcti: str, sealed_path: str, phrase: str) -> bool:
    """Decrypt the recovery file with `phrase` and load its secret into the TPM.

    Everything that can fail without the TPM (file, phrase) is checked before the
    first TPM command, so a wrong phrase or file changes nothing in the TPM. Returns
    False if the TPM already held this very key. Refuses to overwrite a different key
    (clear it first)."""
    from pinutil.master_key import recovery

    secret = recovery.unseal(recovery.read_sealed_file(sealed_path), phrase)
    with Tpm(tcti) as tpm:
        key = MasterKey(tpm)
        if key.exists():
            if key.holds(secret):
                return False
            raise MasterKeyError(
                "the TPM holds a different master key; run "
                "`pinutil master-key clear-from-tpm` first if you mean to replace it")
        key.load_secret(secret)
        return True


class MasterKeyStatus(Record):
    """What `pinutil master-key status` reports (no secret in it). A Record, not a
    dataclass: this module is on the login path (modules/master_key.py)."""

    __slots__ = _FIELDS = ("tpm_handle", "in_tpm", "tpm_error", "sealed_file",
                           "file_present", "file_created_unix_ms", "file_error")

    tpm_handle: str
    in_tpm: bool | None  # None: the TPM could not be asked
    tpm_error: str | None
    sealed_file: str
    file_present: bool
    file_created_unix_ms: int | None
    file_error: str | None


def master_key_status(tcti: str, sealed_path: str) -> MasterKeyStatus:
    """The key's state in the TPM and on disk; TPM or file trouble is reported in the
    result, not raised, so one side can be inspected while the other is broken."""
    from pinutil.master_key import recovery

    in_tpm: bool | None = None
    tpm_error = None
    try:
        with Tpm(tcti) as tpm:
            in_tpm = MasterKey(tpm).exists()
    except PinutilError as e:
        tpm_error = str(e)
    file_present = os.path.lexists(sealed_path)
    created = None
    file_error = None
    if file_present:
        try:
            created = recovery.parse_sealed(
                recovery.read_sealed_file(sealed_path))["created_unix_ms"]
        except MasterKeyError as e:
            file_error = str(e)
    return MasterKeyStatus(f"{MASTER_KEY_HANDLE:#x}", in_tpm, tpm_error, sealed_path,
                           file_present, created, file_error)


def clear_from_tpm(tcti: str) -> bool:
    """Evict the master key; True if there was one. Every token changes for good
    unless the recovery file is imported again."""
    with Tpm(tcti) as tpm:
        return MasterKey(tpm).clear()


def clear_from_disk(sealed_path: str) -> bool:
    """Delete the sealed recovery file; True if there was one."""
    from pinutil.master_key import recovery

    return recovery.remove_sealed_file(sealed_path)
