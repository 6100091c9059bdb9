"""A user's PIN as a TPM2 PIN_FAIL NV index, compatible with pinpam (the Rust original).

Layout (one index per user, at nv_base + uid; during a PIN change, and after a killed
one, at the user's spare handle: pin/slots.py):
  type PIN_FAIL, attributes AUTHREAD|OWNERREAD|POLICYWRITE|NO_DA (never ORDERLY: after
  an unclean stop an ORDERLY index can lose WRITTEN and its counter), nameAlg SHA256,
  dataSize 8 = pinCount||pinLimit (big-endian uint32), authValue = the PIN,
  authPolicy = PolicyCommandCode(NV_Write); PolicyAuthValue; PolicyNvWritten(NO).
The policy allows exactly one write ({0, limit} at enrolment); after it the TPM alone
counts failures and refuses every PIN at the limit. The only way back is a new index
(a change defines it at the user's other handle before the old one goes: lifecycle.py).

The PIN is verified by NV_Read(authHandle = the index) with the PIN as authValue: the
TPM counts a failure (BAD_AUTH) or resets the counter on success. Nothing here ever
resends a PIN after an error: a resent PIN spends another attempt.

Importing this module loads only the stdlib and our cffi binding (no tpm2_pytss, no
cryptography): it is on the PAM login path.
"""
from __future__ import annotations

import struct

from pinutil import errors
from pinutil.pin import slots
from pinutil.pin.policy import MAX_PIN_LENGTH
from pinutil.pin.status import NOT_ENROLLED, PinStatus
from pinutil.tpm import OWNER_NV_FIRST, OWNER_NV_LAST, sapi
from pinutil.tpm._tss import lib
from pinutil.tpm.context import Tpm
from pinutil.tpm.handles import EsysTr
from pinutil.tpm.rc import TpmCommandError
from pinutil.tpm.structs import NvPublic

PIN_INDEX_ATTRIBUTES = (
    (lib.TPM2_NT_PIN_FAIL << lib.TPMA_NV_TPM2_NT_SHIFT)
    | lib.TPMA_NV_AUTHREAD | lib.TPMA_NV_OWNERREAD | lib.TPMA_NV_POLICYWRITE | lib.TPMA_NV_NO_DA
)
PIN_DATA_SIZE = 8
# PolicyCommandCode(NV_Write) ; PolicyAuthValue ; PolicyNvWritten(NO), SHA256.
# tests/test_pin_index.py recomputes it with a trial session on a TPM.
PIN_WRITE_POLICY = bytes.fromhex("d2e9f9d6553c12ae498291dc41b9c35151e37f7fdba75876ac42a7beafbe5d9b")
MAX_PIN_LIMIT = 0xFFFFFFFF
# One text for every command that meets an index a killed setup left behind.
HALF_FINISHED_TEXT = ("was defined but never written (a half-finished setup; it holds no "
                      "PIN): `pinutil setup` replaces it, `pinutil delete` removes it")


def _validate_pin(pin: bytes) -> None:
    # The policy module validates content; this guards what the TPM itself requires.
    if not isinstance(pin, bytes):
        raise errors.InvalidPin("the PIN must be bytes")
    if not pin:
        raise errors.InvalidPin("the PIN is empty")
    if len(pin) > MAX_PIN_LENGTH:
        raise errors.InvalidPin(f"the PIN is longer than {MAX_PIN_LENGTH} bytes")
    if b"\0" in pin:
        # The TPM strips trailing zero bytes of an authValue: "12\0" would equal "12".
        raise errors.InvalidPin("the PIN contains a NUL byte")


def _validate_limit(limit: int) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PIN_LIMIT:
        # pinLimit 0 makes the index unusable from the start.
        raise errors.PinutilError(f"the PIN failure limit must be 1..{MAX_PIN_LIMIT}")


class PinIndex:
    """The PIN_FAIL NV index at `handle` on an open `Tpm`."""

    def __init__(self, tpm: Tpm, handle: int, salt_key_name=None,
                 start_session=sapi.start_salted_session) -> None:
        """`salt_key_name`: the Name root recorded for the salt key (salt_key.py), or a
        function loading it when a PIN is about to be sent (so "not enrolled" comes
        first); salted checks and enrolments refuse any other key, and fail without.
        (bytes, a function returning bytes, or None: not spelled as a type, because
        importing collections.abc would cost every PIN login ~1 ms.)
        `start_session(tpm, salt_key_name)`: where a salted check gets its session
        (pinutild passes one that may hand over a session started while it was idle,
        pinutil/service/spare_session.py)."""
        if not OWNER_NV_FIRST <= handle <= OWNER_NV_LAST:
            raise errors.PinutilError(
                f"NV handle 0x{handle:x} is outside the owner range "
                f"0x{OWNER_NV_FIRST:08x}-0x{OWNER_NV_LAST:08x}")
        self.tpm = tpm
        self.handle = handle
        self.salt_key_name = salt_key_name
        self.start_session = start_session

    @staticmethod
    def handle_for(uid: int, nv_base: int) -> int:
        """pinpam's handle for a user: nv_base + uid (pin/slots.py: range and spare)."""
        return slots.primary(uid, nv_base)

    def at(self, handle: int) -> PinIndex:
        """The same user's index at another of their handles (pin/slots.py), on the same
        TPM, salt key and sessions."""
        return PinIndex(self.tpm, handle, self.salt_key_name, self.start_session)

    def expected_public(self, written: bool) -> NvPublic:
        """The exact public area of our PIN index at this handle."""
        attrs = PIN_INDEX_ATTRIBUTES | (lib.TPMA_NV_WRITTEN if written else 0)
        return NvPublic(self.handle, lib.TPM2_ALG_SHA256, attrs, PIN_WRITE_POLICY, PIN_DATA_SIZE)

    # ---- reading without spending an attempt
    def status(self) -> PinStatus:
        """Counter and limit, read as owner (OWNERREAD). Never sends a PIN.

        Not defined -> enrolled=False. Defined but never written (a half-finished setup)
        -> enrolled=False with `detail` saying so. Not a PIN index -> NotEnrolled.
        """
        found = sapi.read_nv_public(self.tpm, self.handle)
        if found is None:
            return NOT_ENROLLED
        if not self._is_enrolled_pin_index(*found):
            return PinStatus(
                enrolled=False, failures=0, limit=0, locked=False, attempts_left=0,
                detail=f"PIN index 0x{self.handle:08x} {HALF_FINISHED_TEXT}",
                half_finished=True)
        failures, limit = self._read_counter()
        return PinStatus(
            enrolled=True, failures=failures, limit=limit, locked=failures >= limit,
            attempts_left=max(limit - failures, 0))

    # ---- the PIN check
    def check(self, pin: bytes, salted: bool = True) -> None:
        """Verify `pin` with the TPM; return on success, raise otherwise.

        WrongPin(attempts_left) / PinLocked / NotEnrolled / TpmUnavailable / InvalidPin.
        The index's Name is verified before the PIN is used; a PIN is sent at most
        once. salted=False uses a password session: the PIN crosses the TPM bus in
        clear. Both run through SAPI with our own session crypto (tpm/sapi.py).
        """
        _validate_pin(pin)
        found = sapi.read_nv_public(self.tpm, self.handle)
        if found is None:
            raise errors.NotEnrolled(f"no PIN index at 0x{self.handle:08x}")
        if not self._is_enrolled_pin_index(*found):
            raise errors.NotEnrolled(f"PIN index 0x{self.handle:08x} {HALF_FINISHED_TEXT}")
        self._send_pin(found[1], pin, salted)

    def _send_pin(self, name: bytes, pin: bytes, salted: bool) -> None:
        tpm = self.tpm
        session = self.start_session(tpm, self._salt_key_name()) if salted else None
        try:
            if session is None:
                sapi.read_nv_with_password(tpm, self.handle, PIN_DATA_SIZE, pin)
            else:
                sapi.read_nv_with_session(tpm, self.handle, name, PIN_DATA_SIZE, pin, session)
        except BaseException as e:
            if session is not None:
                # A failed command, or an answer we refused (the TPM may never have
                # seen the command), leaves the session loaded: without a resource
                # manager it would hold one of the TPM's few session slots.
                tpm.flush_quietly(session.handle)
            if not isinstance(e, TpmCommandError):
                raise
            if e.code == lib.TPM2_RC_BAD_AUTH:
                raise errors.WrongPin(self._attempts_left_after_failure()) from None
            if e.code == lib.TPM2_RC_AUTH_UNAVAILABLE:
                # The index is WRITTEN (checked above), so this is pinCount >= pinLimit.
                raise errors.PinLocked(
                    "too many wrong PINs: the PIN is locked; set a new one to unlock") from None
            raise
        # Any other TpmUnavailable (transport failure, an answer that fails its HMAC
        # check) propagates: the PIN may or may not have been counted. Never resend.

    def _attempts_left_after_failure(self) -> int:
        """Attempts left after a counted failure; -1 if the counter cannot be read."""
        try:
            failures, limit = self._read_counter()
        except errors.TpmUnavailable:
            return -1
        return max(limit - failures, 0)

    # ---- enrolment
    def define(self, pin: bytes, limit: int, salted: bool = True) -> None:
        """Create the index with `pin` as its auth and write {0, limit} once.

        AlreadyEnrolled if the handle is taken; TpmUnsupported without
        PolicyNvWritten. If the write fails the index is undefined again.
        """
        _validate_pin(pin)
        _validate_limit(limit)
        self._require_policy_nv_written()
        tpm = self.tpm
        hmac_session: EsysTr | None = None  # None: the Tpm picks the owner's session
        policy_session: int = lib.ESYS_TR_NONE
        try:
            if salted:
                primary = tpm.storage_primary()
                try:
                    sapi.require_salt_key_name(tpm.get_name(primary), self._salt_key_name())
                    # DECRYPT: NV_DefineSpace's first parameter is the new authValue (the PIN).
                    hmac_session = tpm.salted_session(
                        primary, lib.TPMA_SESSION_DECRYPT | lib.TPMA_SESSION_CONTINUESESSION)
                    # The write's PolicyAuthValue HMAC is keyed with the PIN: salt it too.
                    policy_session = tpm.policy_session(primary)
                finally:
                    tpm.flush_quietly(primary)
            else:
                policy_session = tpm.policy_session()
            nv = self._define_space(pin, hmac_session)
            try:
                tpm.policy_command_code(policy_session, lib.TPM2_CC_NV_Write)
                tpm.policy_auth_value(policy_session)
                tpm.policy_nv_written(policy_session, False)
                tpm.set_auth(nv, pin)
                tpm.nv_write(nv, nv, struct.pack(">II", 0, limit), session=policy_session)
            except BaseException:
                self._undefine_after_failed_write(nv)
                raise
            self._forget(nv)
        finally:
            for session in (hmac_session, policy_session):
                if type(session) is EsysTr:  # not ESYS_TR_PASSWORD / ESYS_TR_NONE
                    tpm.flush_quietly(session)

    def _define_space(self, pin: bytes, session: EsysTr | None) -> EsysTr:
        try:
            return self.tpm.nv_define_space(self.expected_public(written=False), pin, session)
        except TpmCommandError as e:
            if e.code == lib.TPM2_RC_NV_DEFINED:
                raise errors.AlreadyEnrolled(
                    f"NV index 0x{self.handle:08x} already exists") from None
            if e.code == lib.TPM2_RC_NV_SPACE:
                raise errors.PinutilError("the TPM has no NV space left for a PIN index") from None
            raise

    def _undefine_after_failed_write(self, nv: EsysTr) -> None:
        try:
            self.tpm.nv_undefine_space(nv)
        except errors.TpmUnavailable:
            # Left behind unwritten: status() reports it, check() refuses it.
            pass

    def _require_policy_nv_written(self) -> None:
        if not self.tpm.get_command_supported(lib.TPM2_CC_PolicyNvWritten):
            raise errors.TpmUnsupported(
                "this TPM lacks TPM2_PolicyNvWritten, which the PIN index needs "
                "(known on some firmware TPMs, cf. pinpam issue #20)")

    # ---- removal
    def delete(self, only_half_finished: bool = False) -> None:
        """Owner NV_UndefineSpace of our PIN index, written or half-finished. With
        `only_half_finished` a written index raises PermissionDenied (a setup finished
        after the caller looked: deleting it needs the PIN again).

        NotEnrolled if nothing is defined there, or if the index there is not a PIN
        index (another application's data is never deleted).
        """
        nv = self._open()
        if nv is None:
            raise errors.NotEnrolled(f"no PIN index at 0x{self.handle:08x}")
        try:
            name = self.tpm.get_name(nv)
            ours = {self.expected_public(written=w).name() for w in (True, False)}
            if name not in ours:
                raise errors.NotEnrolled(self._foreign_index_message(self._read_public()))
            if only_half_finished and name != self.expected_public(written=False).name():
                raise errors.PermissionDenied(
                    f"PIN index 0x{self.handle:08x} now holds a PIN: deleting it needs the PIN")
            self.tpm.nv_undefine_space(nv)
        except BaseException:
            self._forget(nv)
            raise

    def remove_if_half_finished(self) -> bool:
        """Undefine the index if a killed setup left it unwritten; True if it did.
        A written PIN index (or nothing) is left alone."""
        found = sapi.read_nv_public(self.tpm, self.handle)
        if found is None or self._is_enrolled_pin_index(*found):
            return False
        self.delete(only_half_finished=True)
        return True

    def remove_leftover(self) -> bool:
        """Undefine our PIN index here, written or not; True if there was one. Only for a
        handle no record names (what a killed change left at the user's other handle):
        its PIN logs no one in. A foreign index raises NotEnrolled and stays."""
        if sapi.read_nv_public(self.tpm, self.handle) is None:
            return False
        self.delete()
        return True

    # ---- helpers
    def _salt_key_name(self) -> bytes | None:
        name = self.salt_key_name
        return name() if callable(name) else name

    def _open(self) -> EsysTr | None:
        """ESYS_TR of the index, or None if nothing is defined at the handle."""
        return self.tpm.tr_if_present(self.handle)

    def _forget(self, nv: EsysTr) -> None:
        try:
            self.tpm.close_tr(nv)
        except errors.TpmUnavailable:
            pass

    def _read_public(self) -> NvPublic:
        """The public area at our handle (for messages about a foreign index)."""
        found = sapi.read_nv_public(self.tpm, self.handle)
        if found is None:
            raise errors.NotEnrolled(f"no PIN index at 0x{self.handle:08x}")
        return found[0]

    def _is_enrolled_pin_index(self, public: NvPublic, name: bytes) -> bool:
        """True for our exact WRITTEN layout, False for our unwritten layout.

        Compares the Name the TPM reported (a hash over the whole public area) with
        the Name of the expected public area. Anything else at the handle raises
        NotEnrolled, before any PIN is sent.
        """
        if name == self.expected_public(written=True).name():
            return True
        if name == self.expected_public(written=False).name():
            return False
        raise errors.NotEnrolled(self._foreign_index_message(public))

    def _foreign_index_message(self, pub: NvPublic) -> str:
        problems = []
        if pub.nv_type != lib.TPM2_NT_PIN_FAIL:
            problems.append(f"type {pub.nv_type} instead of PIN_FAIL")
        if pub.attributes & ~lib.TPMA_NV_WRITTEN != PIN_INDEX_ATTRIBUTES:
            problems.append(f"attributes 0x{pub.attributes:08x}")
        if pub.name_alg != lib.TPM2_ALG_SHA256:
            problems.append(f"nameAlg 0x{pub.name_alg:x}")
        if pub.auth_policy != PIN_WRITE_POLICY:
            problems.append("a different write policy")
        if pub.data_size != PIN_DATA_SIZE:
            problems.append(f"size {pub.data_size}")
        detail = ", ".join(problems) or "an unexpected public area"
        return f"NV index 0x{self.handle:08x} is not a PIN index ({detail}); refusing to use it"

    def _read_counter(self) -> tuple[int, int]:
        """Read only once the index was found WRITTEN: its Name goes into the cpHash."""
        data = sapi.read_nv_as_owner(self.tpm, self.handle,
                                     self.expected_public(written=True).name(), PIN_DATA_SIZE)
        failures, limit = struct.unpack(">II", data)
        return failures, limit
