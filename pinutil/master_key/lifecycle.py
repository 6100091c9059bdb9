"""The master key's admin life cycle: init, import, status, clear (`pinutil master-key`).

Loading a secret: it is generated in software (init) or decrypted from the sealed
recovery file (import, recovery.py), then imported into the TPM as the persistent
HMAC key token.py uses. The secret crosses the bus only as the encrypted first
parameter of TPM2_Create, in a session salted with the storage primary, which is the
Create/Load parent too and is flushed afterwards (token.py says why it is not kept).

Not on the login path: the PAM module imports token.py only. But every `pinutil` run
imports this module (for its argument parser, also when it is the PAM module's
helper), so `hashlib` (OpenSSL) and the recovery code are imported by the operations
that use them.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from pinutil.errors import MasterKeyError, PinutilError
from pinutil.master_key.token import MASTER_KEY_HANDLE, MasterKey
from pinutil.record import Record
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.context import Tpm
from pinutil.tpm.handles import EsysTr
from pinutil.tpm.rc import TpmCommandError
from pinutil.tpm.structs import fill_tpm2b, wipe_tpm2b

_KEY_ATTRIBUTES = (lib.TPMA_OBJECT_FIXEDTPM | lib.TPMA_OBJECT_FIXEDPARENT
                   | lib.TPMA_OBJECT_USERWITHAUTH | lib.TPMA_OBJECT_NODA
                   | lib.TPMA_OBJECT_SIGN_ENCRYPT)
# HMAC'd in the TPM and in software to check which secret the TPM holds.
_PROBE = b"pinutil master-key probe"


def software_token(secret: bytes, user: str) -> str:
    """The token computed without a TPM (recovery; the TPM must agree with this)."""
    import hashlib
    import hmac

    return hmac.new(secret, user.encode("utf-8"), hashlib.sha256).hexdigest()


class MasterKeyAdmin(MasterKey):
    """MasterKey plus the commands that compare, load and evict it."""

    def holds(self, secret: bytes) -> bool:
        """True if the TPM's master key is `secret` (compared through one HMAC)."""
        if not self.exists():
            return False
        import hashlib
        import hmac

        expected = hmac.new(secret, _PROBE, hashlib.sha256).digest()
        return hmac.compare_digest(self.hmac(_PROBE), expected)

    def load_secret(self, secret: bytes, replace: bool = False) -> None:
        """Import `secret` as the persistent HMAC key. Refuses if a key is present,
        unless `replace`."""
        from pinutil.master_key.recovery import SECRET_SIZE

        if len(secret) != SECRET_SIZE:
            raise MasterKeyError(f"the master key must be {SECRET_SIZE} bytes")
        old = self._open_persistent()
        try:
            if old is not None:
                self._require_hmac_key(self.tpm.read_public(old))
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
            self._require_hmac_key(self.tpm.read_public(tr))
        except BaseException:
            self.tpm.close_tr(tr)
            raise
        self._evict(tr)
        return True

    # -- import steps ----------------------------------------------------------------
    @staticmethod
    def _template():
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

    def _create_and_load(self, secret: bytes) -> EsysTr:
        """Create the HMAC object from `secret` under a fresh storage primary and load
        it; returns the transient ESYS_TR (the caller flushes it)."""
        sensitive = ffi.new("TPM2B_SENSITIVE_CREATE *")
        sensitive.sensitive.userAuth.size = 0
        fill_tpm2b(sensitive.sensitive.data, secret)
        primary = self.tpm.storage_primary()
        try:
            # DECRYPT: the TPM decrypts Create's first parameter, inSensitive, which
            # holds the secret; ENCRYPT protects outPrivate on the way back.
            session = self.tpm.salted_session(primary)
            try:
                return self.tpm.create_loaded(primary, session, sensitive, self._template())
            finally:
                self.tpm.flush_quietly(session)
        finally:
            # Best effort only: Python cannot promise the bytes are gone elsewhere.
            wipe_tpm2b(sensitive.sensitive.data)
            self.tpm.flush_quietly(primary)

    def _evict_control(self, tr: EsysTr, what: str) -> EsysTr:
        """Owner EvictControl at our handle, its owner-password and full-TPM refusals
        as MasterKeyError."""
        try:
            return self.tpm.evict_control(tr, self.handle)
        except TpmCommandError as e:
            if e.code in (lib.TPM2_RC_BAD_AUTH, lib.TPM2_RC_AUTH_FAIL):
                raise MasterKeyError(f"{what}: the TPM owner hierarchy has a password, "
                                     "which pinutil does not support") from None
            if e.code == lib.TPM2_RC_NV_SPACE:
                raise MasterKeyError(f"{what}: the TPM has no free persistent handle") \
                    from None
            raise

    def _persist(self, transient: EsysTr) -> None:
        self.tpm.close_tr(self._evict_control(transient, "making the master key persistent"))

    def _evict(self, persistent: EsysTr) -> None:
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
                if e.code != lib.TSS2_ESYS_RC_BAD_TR:
                    raise


# --- the `pinutil master-key` operations ------------------------------------------------

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
        key = MasterKeyAdmin(tpm)
        if not replace:
            if key.exists():
                raise MasterKeyError(
                    "a master key is already in the TPM (use --replace to replace it)")
            if os.path.lexists(sealed_path):
                raise MasterKeyError(
                    f"{sealed_path} already exists (use --replace to replace it)")
        secret = secrets.token_bytes(recovery.SECRET_SIZE)
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
        key = MasterKeyAdmin(tpm)
        if key.exists():
            if key.holds(secret):
                return False
            raise MasterKeyError(
                "the TPM holds a different master key; run "
                "`pinutil master-key clear-from-tpm` first if you mean to replace it")
        key.load_secret(secret)
        return True


class MasterKeyStatus(Record):
    """What `pinutil master-key status` reports (no secret in it)."""

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
        return MasterKeyAdmin(tpm).clear()


def clear_from_disk(sealed_path: str) -> bool:
    """Delete the sealed recovery file; True if there was one."""
    from pinutil.master_key import recovery

    return recovery.remove_sealed_file(sealed_path)
