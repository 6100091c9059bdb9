"""The master key's admin life cycle: init, import, status, clear (`pinutil master-key`).

Loading a secret: it is generated in software (init) or decrypted from the sealed
recovery file (import, recovery.py), then imported into the TPM as the persistent
HMAC key token.py uses, with a fresh random authValue written to the authorisation
record (auth_record.py, which says in what order, so that a kill at any moment leaves
a usable key or the recovery file's way back). The secret and the authValue cross the
bus only as the encrypted first parameter of TPM2_Create, in a session salted with
the storage primary, which is the Create/Load parent too and is flushed afterwards
(token.py says why it is not kept).

Two halves: what needs the TPM (`MasterKeyAdmin`: load, state, clear), which pinutild
runs for root (service/verbs.py) or `pinutil` runs itself when there is no service;
and what needs the recovery file and the phrase (the functions at the end), which only
`pinutil` runs: the service never sees the file or the phrase, only the secret root
hands it. The functions reach the TPM half through `open_key`, a callable returning a
context manager that yields an object with `exists`, `load`, `state` and `clear`: a
`MasterKeyAdmin` on an open TPM, or the service's client (cli/master_key.py).

Not on the login path: the PAM module imports token.py only. But every `pinutil` run
imports this module (for its argument parser, also when it is the PAM module's
helper), so `hashlib` (OpenSSL) and the recovery code are imported by the operations
that use them.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from pinutil.errors import MasterKeyError, PinutilError
from pinutil.master_key import auth_record
from pinutil.master_key.token import MASTER_KEY_HANDLE, MasterKey
from pinutil.record import Record
from pinutil.tpm._tss import ffi, lib
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
        """True if the TPM's master key is `secret` (compared through one HMAC). A key
        the record does not know is tried once with an empty authValue (pinpam's key,
        which an import gives a recorded one); False when the TPM refuses both."""
        if not self.exists():
            return False
        import hashlib
        import hmac

        expected = hmac.new(secret, _PROBE, hashlib.sha256).digest()
        try:
            found = self.hmac(_PROBE)
        except MasterKeyError:
            try:
                found = MasterKey(self.tpm, self.handle, self.salt_key_name).hmac(_PROBE)
            except MasterKeyError:
                return False
        return hmac.compare_digest(found, expected)

    def load(self, secret: bytes, replace: bool = False) -> bool:
        """Put `secret` in the TPM; True if the TPM changed.

        Without `replace`: a TPM already holding `secret` is left alone (False), unless
        its key has no recorded authValue: it is created again with one (True); a TPM
        holding another key is refused. With `replace` any master key is replaced."""
        if not replace and self.exists():
            if not self.holds(secret):
                raise MasterKeyError(
                    "the TPM holds a different master key; run "
                    "`pinutil master-key clear-from-tpm` first if you mean to replace it")
            if self.auth_path is None or self.auth_state() == "recorded":
                return False
            replace = True  # the same secret, now with an authValue of its own
        self.load_secret(secret, replace=replace)
        return True

    def state(self) -> tuple[bool, str | None]:
        """(a key is in the TPM, its auth_state() or None without one)."""
        if not self.exists():
            return False, None
        return True, self.auth_state()

    def load_secret(self, secret: bytes, replace: bool = False) -> None:
        """Import `secret` as the persistent HMAC key, with a new random authValue
        recorded at `auth_path` (an empty one, unrecorded, without an `auth_path`).
        Refuses if a key is present, unless `replace`."""
        from pinutil.master_key.recovery import SECRET_SIZE

        if len(secret) != SECRET_SIZE:
            raise MasterKeyError(f"the master key must be {SECRET_SIZE} bytes")
        auth = auth_record.new_auth_value() if self.auth_path else b""
        old = self._open_persistent()
        try:
            old_name = None
            if old is not None:
                self._require_hmac_key(self.tpm.read_public(old))
                if not replace:
                    raise MasterKeyError("a master key is already in the TPM")
                old_name = self.tpm.get_name(old)
            new = self._create_and_load(secret, auth)
            try:
                new_name = self.tpm.get_name(new)
                # Recorded before the key is persistent, next to the old key's line: a
                # kill from here on leaves a line for whichever key the TPM holds.
                self._record(new_name, auth, keep=old_name)
                if old is not None:
                    evicted, old = old, None
                    self._evict(evicted)
                self._persist(new)
            finally:
                self.tpm.flush_quietly(new)
        finally:
            if old is not None:
                self.tpm.close_tr(old)
        self._record(new_name, auth)  # the old key's line goes
        if not self.holds(secret):  # read back: the TPM must now agree with the file
            raise MasterKeyError("the TPM's master key does not match after loading it")

    def clear(self) -> bool:
        """Evict the master key from the TPM, then its authorisation record; True if
        there was a key."""
        tr = self._open_persistent()
        if tr is None:
            return False
        try:
            self._require_hmac_key(self.tpm.read_public(tr))
        except BaseException:
            self.tpm.close_tr(tr)
            raise
        self._evict(tr)
        if self.auth_path:
            auth_record.save(self.auth_path, {})  # it describes the key in the TPM only
        return True

    def _record(self, name: bytes, auth: bytes, keep: bytes | None = None) -> None:
        """Record `auth` for the key `name`, keeping a line for the key `keep`: its own,
        or, when there is no record at all, its empty authValue (pinpam's key). A record
        that cannot be read is replaced (it could not have given a token either)."""
        if not self.auth_path:
            return
        entries = {}
        if keep is not None:
            try:
                old = auth_record.load(self.auth_path)
            except MasterKeyError:
                old = None
            if old == {}:
                entries[keep] = b""
            elif old and keep in old:
                entries[keep] = old[keep]
        entries[name] = auth
        auth_record.save(self.auth_path, entries)

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

    def _create_and_load(self, secret: bytes, auth: bytes) -> EsysTr:
        """Create the HMAC object from `secret` with authValue `auth` under a fresh
        storage primary and load it; returns the transient ESYS_TR (the caller
        flushes it)."""
        sensitive = ffi.new("TPM2B_SENSITIVE_CREATE *")
        fill_tpm2b(sensitive.sensitive.userAuth, auth)
        fill_tpm2b(sensitive.sensitive.data, secret)
        primary = self.tpm.storage_primary()
        try:
            if self.salt_key_name is not None:
                # The secret goes only to the recorded salt key, as a PIN and the owner
                # password do (pin/index.py, Tpm.change_hierarchy_auth): a key an
                # interposer made up would read it. No record: trust on first use.
                from pinutil.tpm import sapi

                sapi.require_salt_key_name(self.tpm.get_name(primary), self.salt_key_name)
            # DECRYPT: the TPM decrypts Create's first parameter, inSensitive, which
            # holds the secret and the authValue; ENCRYPT protects outPrivate.
            session = self.tpm.salted_session(primary)
            try:
                return self.tpm.create_loaded(primary, session, sensitive, self._template())
            finally:
                self.tpm.flush_quietly(session)
        finally:
            # Best effort only: Python cannot promise the bytes are gone elsewhere.
            wipe_tpm2b(sensitive.sensitive.data)
            wipe_tpm2b(sensitive.sensitive.userAuth)
            self.tpm.flush_quietly(primary)

    def _evict_control(self, tr: EsysTr, what: str) -> EsysTr:
        """Owner EvictControl at our handle, its full-TPM refusal as MasterKeyError (a
        refused owner password is Tpm's own TpmUnavailable)."""
        try:
            return self.tpm.evict_control(tr, self.handle)
        except TpmCommandError as e:
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

def direct_key(tcti: str, auth_path: str, salt_key_name: bytes | None = None,
               owner_auth=b""):
    """`open_key` for `pinutil` without the service: a MasterKeyAdmin on a TPM it
    opens itself (root, or group tss). `owner_auth`: as Tpm's (the EvictControl)."""
    import contextlib

    from pinutil.tpm.context import Tpm

    @contextlib.contextmanager
    def open_key():
        with Tpm(tcti, owner_auth=owner_auth) as tpm:
            yield MasterKeyAdmin(tpm, salt_key_name=salt_key_name, auth_path=auth_path)
    return open_key


def init_master_key(open_key, sealed_path: str, confirm_phrase: Callable[[str], None],
                    replace: bool = False) -> None:
    """Generate a secret and a recovery phrase, show the phrase through
    `confirm_phrase` (which raises to abort; nothing is written then), write the
    sealed recovery file, then load the secret into the TPM.

    Refuses if a key is in the TPM or the file exists, unless `replace`. The file is
    written before the TPM is touched, so the TPM never holds a key without its
    recovery copy. The TPM is not kept open while the phrase is shown."""
    import secrets

    from pinutil.master_key import recovery

    if not replace:
        with open_key() as key:
            if key.exists():
                raise MasterKeyError(
                    "a master key is already in the TPM (use --replace to replace it)")
        if os.path.lexists(sealed_path):
            raise MasterKeyError(f"{sealed_path} already exists (use --replace to replace it)")
    secret = secrets.token_bytes(recovery.SECRET_SIZE)
    phrase = recovery.new_phrase()
    confirm_phrase(phrase)
    recovery.write_sealed_file(sealed_path, recovery.seal(secret, phrase))
    try:
        with open_key() as key:
            key.load(secret, replace=replace)
    except MasterKeyError as e:
        raise MasterKeyError(
            f"{e}; the recovery file {sealed_path} is written: "
            "run `pinutil master-key import` to load it") from None


def import_master_key(open_key, sealed_path: str, phrase: str) -> bool:
    """Decrypt the recovery file with `phrase` and load its secret into the TPM.

    Everything that can fail without the TPM (file, phrase) is checked before the
    first TPM command, so a wrong phrase or file changes nothing in the TPM. Returns
    False if the TPM already held this very key with a recorded authValue (a key
    without one, pinpam's, is created again with one). Refuses to overwrite a
    different key (clear it first)."""
    from pinutil.master_key import recovery

    secret = recovery.unseal(recovery.read_sealed_file(sealed_path), phrase)
    with open_key() as key:
        return key.load(secret)


class MasterKeyStatus(Record):
    """What `pinutil master-key status` reports (no secret in it)."""

    __slots__ = _FIELDS = ("tpm_handle", "in_tpm", "tpm_auth", "tpm_error", "sealed_file",
                           "file_present", "file_created_unix_ms", "file_error")

    tpm_handle: str
    in_tpm: bool | None  # None: the TPM could not be asked
    tpm_auth: str | None  # MasterKey.auth_state(), None without a key
    tpm_error: str | None
    sealed_file: str
    file_present: bool
    file_created_unix_ms: int | None
    file_error: str | None


def master_key_status(open_key, sealed_path: str) -> MasterKeyStatus:
    """The key's state in the TPM and on disk; TPM or file trouble is reported in the
    result, not raised, so one side can be inspected while the other is broken."""
    from pinutil.master_key import recovery

    in_tpm: bool | None = None
    auth = tpm_error = None
    try:
        with open_key() as key:
            in_tpm, auth = key.state()
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
    return MasterKeyStatus(f"{MASTER_KEY_HANDLE:#x}", in_tpm, auth, tpm_error, sealed_path,
                           file_present, created, file_error)


def clear_from_tpm(open_key) -> bool:
    """Evict the master key; True if there was one. Every token changes for good
    unless the recovery file is imported again."""
    with open_key() as key:
        return key.clear()


def clear_from_disk(sealed_path: str) -> bool:
    """Delete the sealed recovery file; True if there was one."""
    from pinutil.master_key import recovery

    return recovery.remove_sealed_file(sealed_path)
