"""The master key on the login path: a user's token, computed by the TPM.

A user's token is lowercase hex HMAC-SHA256(secret, user as UTF-8), computed by the
TPM (pinpam v0.0.5's definition, so its users keep their keyrings) with the 32-byte
HMAC key persisted at MASTER_KEY_HANDLE. How that key gets there, and its recovery
copy, is the admin side (lifecycle.py, recovery.py), which this module never imports.

Design: ONE persistent handle. The HMAC key is persisted at 0x81000081 (pinpam's
handle, so a key pinpam left there keeps working). Its parent, the noDA ECC P-256
storage primary, is NOT persisted (pinpam keeps an RSA SRK at 0x81000080): it is
needed only while the secret is imported, and a primary is a pure function of its
template and the owner seed, so it can be recreated whenever needed. A persistent
object needs no loaded parent to be used, so the login path never creates a primary.
TPMs have few persistent slots (swtpm: 7, shared with e.g. the OS's SRK at 0x81000001).

The token never crosses the TPM bus in clear: the HMAC is authorised through a salted
HMAC session with response encryption (TPMA_SESSION_ENCRYPT, tpm/sapi.py), so the TPM
returns it XOR-masked under the session key, which only the TPM and this process can
compute. Salt key: the one root recorded for PIN checks (pin/salt_key.py) when the
caller passes its Name; else the TPM's own storage primary, unverified, which keeps
the token from a passive observer of the bus only. Four TPM commands with a
persistent salt key: ReadPublic (the key), ReadPublic (the salt key),
StartAuthSession, HMAC.

Key attributes: fixedTPM|fixedParent (the secret never leaves this TPM in any form
but the recovery file), userWithAuth (the login needs no secret of its own: the
authValue is the machine's, not the user's), noDA (an unrelated DA lockout must not
break every login; the authValue is 32 random bytes, beyond guessing), sign (HMAC).
The authValue: every key pinutil creates has a random one that only root and the
service can read (auth_record.py), so raw TPM access (the `tss` group) no longer
derives a token; a key without a record (pinpam's) is used with an empty one, and
then whoever can send commands to the TPM can derive every user's token.

Imports only the TPM layer: not `tpm2_pytss`, not `cryptography`, not even `hashlib`
(OpenSSL): tests/test_master_key.py checks it in a fresh interpreter.
"""
from __future__ import annotations

from pinutil.errors import MasterKeyError
from pinutil.master_key import auth_record
from pinutil.tpm import sapi
from pinutil.tpm._tss import lib
from pinutil.tpm.context import Tpm
from pinutil.tpm.handles import EsysTr
from pinutil.tpm.rc import TpmCommandError

MASTER_KEY_HANDLE = 0x81000081
# TPM2_HMAC takes a TPM2B_MAX_BUFFER; 1024 is MAX_DIGEST_BUFFER on every TPM we know.
MAX_USER_BYTES = 1024


def _user_bytes(user: str) -> bytes:
    data = user.encode("utf-8")
    if not data or b"\0" in data or len(data) > MAX_USER_BYTES:
        raise MasterKeyError("not a usable user name for a token")
    return data


class MasterKey:
    """The master key inside one open `Tpm` (lifecycle.MasterKeyAdmin adds the
    commands that change it). `salt_key_name`: the recorded salt key's Name, or None
    (see the module docstring). `auth_path`: the authorisation record (the policy's
    `master_key_auth_file`), or None for a key used with an empty authValue only."""

    def __init__(self, tpm: Tpm, handle: int = MASTER_KEY_HANDLE,
                 salt_key_name: bytes | None = None, auth_path: str | None = None) -> None:
        self.tpm = tpm
        self.handle = handle
        self.salt_key_name = salt_key_name
        self.auth_path = auth_path

    def exists(self) -> bool:
        """True if the TPM holds a usable master key; MasterKeyError if the handle is
        taken by something else."""
        found = sapi.read_public(self.tpm, self.handle)
        if found is None:
            return False
        self._require_hmac_key(found[0])
        return True

    def token_for(self, user: str) -> str:
        """The user's token (64 lowercase hex characters), computed by the TPM."""
        return self.hmac(_user_bytes(user)).hex()

    def hmac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of `data` with the master key, returned encrypted on the bus."""
        found = sapi.read_public(self.tpm, self.handle)
        if found is None:
            raise MasterKeyError("no master key in the TPM")
        public, name = found
        self._require_hmac_key(public)
        auth = self._auth_value(name)
        tpm = self.tpm
        if self.salt_key_name is None:
            session = sapi.start_unverified_salted_session(tpm)
        else:
            session = sapi.start_salted_session(tpm, self.salt_key_name)
        try:
            return sapi.hmac_with_session(tpm, self.handle, name, data, auth, session)
        except BaseException as e:
            # A refused command leaves the session loaded (a good one ends it).
            tpm.flush_quietly(session.handle)
            if isinstance(e, TpmCommandError) and e.code in (lib.TPM2_RC_BAD_AUTH,
                                                             lib.TPM2_RC_AUTH_FAIL):
                raise MasterKeyError(
                    "the TPM refused the master key's authorisation: "
                    + ("its record is missing" if not auth else "the record is not this key's")
                    + f" ({self.auth_path or 'no record given'})") from None
            raise

    # -- helpers ---------------------------------------------------------------------
    def _auth_value(self, name: bytes) -> bytes:
        """The authValue recorded for the key with Name `name`: empty when there is no
        record; MasterKeyError when the record names other keys only (never a token
        from a key the record does not know, whatever authValue it would take)."""
        if self.auth_path is None:
            return b""
        entries = auth_record.load(self.auth_path)
        if not entries:
            return b""
        try:
            return entries[name]
        except KeyError:
            raise MasterKeyError(
                f"the master key in the TPM is not the one recorded in {self.auth_path}: "
                "import the recovery file again (`pinutil master-key import`)") from None

    def auth_state(self) -> str:
        """"recorded" (a key with an authValue only root and pinutild know), "empty"
        (no record: pinpam's empty authValue), or "mismatch" (the record names
        another key); MasterKeyError without a usable key or record."""
        found = sapi.read_public(self.tpm, self.handle)
        if found is None:
            raise MasterKeyError("no master key in the TPM")
        self._require_hmac_key(found[0])
        entries = auth_record.load(self.auth_path) if self.auth_path else {}
        if found[1] not in entries:
            return "mismatch" if entries else "empty"
        return "recorded" if entries[found[1]] else "empty"

    def _open_persistent(self) -> EsysTr | None:
        """An ESYS_TR for our handle (one ReadPublic), or None if the slot is empty."""
        return self.tpm.tr_if_present(self.handle)

    def _require_hmac_key(self, public) -> None:
        """Fail closed if `public` (the TPM2B_PUBLIC at our handle) is something other
        than an HMAC key we can use."""
        area = public.publicArea
        scheme = area.parameters.keyedHashDetail.scheme
        attributes = area.objectAttributes
        usable = (area.type == lib.TPM2_ALG_KEYEDHASH
                  and attributes & lib.TPMA_OBJECT_SIGN_ENCRYPT
                  and not attributes & (lib.TPMA_OBJECT_RESTRICTED | lib.TPMA_OBJECT_DECRYPT)
                  and attributes & lib.TPMA_OBJECT_USERWITHAUTH
                  and (scheme.scheme == lib.TPM2_ALG_NULL
                       or (scheme.scheme == lib.TPM2_ALG_HMAC
                           and scheme.details.hmac.hashAlg == lib.TPM2_ALG_SHA256)))
        if not usable:
            raise MasterKeyError(
                f"TPM handle {self.handle:#x} holds an object that is not an HMAC-SHA256 "
                "key; refusing to use or replace it")


def user_token(tcti: str, user: str, timeout_ms: int | None = None,
               salt_key_name: bytes | None = None, auth_path: str | None = None,
               owner_auth=b"") -> str:
    """The token for `user` from the TPM at `tcti` (the PAM module's one call).
    `owner_auth` as Tpm's: needed only when the salt key must be created (no
    persistent one), a key of the owner hierarchy."""
    with Tpm(tcti, timeout_ms=timeout_ms, owner_auth=owner_auth) as tpm:
        return MasterKey(tpm, salt_key_name=salt_key_name, auth_path=auth_path).token_for(user)
