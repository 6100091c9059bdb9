"""One open TPM (`Tpm`): the TPM layer's only way to send a command.

Every command, ESAPI or SAPI, is sent by a `Tpm` method or by a tpm/sapi.py function
over the `Tpm`'s one connection, and every return code goes through `Tpm.send`, which
counts the command and raises per tpm/rc.py (`TpmCommandError` for a TPM's refusal,
`errors.TpmUnavailable` for a transport failure). Which API a command uses is the
method's business: ESAPI (`Tpm.esys`) for the admin paths, where ESYS's sessions and
ESYS_TR bookkeeping are worth their cost; SAPI (`Tpm.sys`, ESYS's own SAPI context on
the same connection) for the login path and for the storage primary, whose answer we
check ourselves (tpm/sapi.py says why). Objects to flush come back as `EsysTr` or
`TpmHandle` (tpm/handles.py); `flush`/`flush_quietly` take either and nothing else.

Environment: the core does not read TSS2_* (or any other) variables from the caller.
The launcher and the PAM module are responsible for running us in a clean
environment. As a second line of defence `Tpm()` forces `TSS2_LOG=all+NONE` and
removes `TSS2_LOGFILE` before the first TCTI is opened in the process. That changes
the process's environment, so a PAM module never opens a `Tpm` in the host: it does
so in a forked child (deadline.py), whose environment is its own copy. Verified with
tpm2-tss 3.2.1 (see tests/test_tpm.py::test_tss2_log_variables_are_neutralised):
libtss2 reads TSS2_LOG/TSS2_LOGFILE lazily, on its first log call per module, and the
first call happens inside Tss2_TctiLdr_Initialize; a value set before that is obeyed,
a value changed after it is ignored. So the scrub only helps if nothing else in the
process (e.g. tpm2_pytss) has used libtss2 before us.

Timeouts: `timeout_ms` is passed to Esys_SetTimeout, but in tpm2-tss 3.2.1 the
synchronous Esys_* calls force an infinite timeout for their _Finish step, and
tcti-swtpm ignores timeouts altogether (blocking read). A hung TPM therefore blocks
the calling thread; the bound must come from the caller (a child process killed at a
deadline: deadline.py, or the pinutil helper run with a timeout). The kernel TPM
driver behind /dev/tpmrm0 applies its own command timeouts.

Owner hierarchy: every command authorised by the owner hierarchy (CreatePrimary of the
storage primary, EvictControl, NV_DefineSpace, NV_UndefineSpace, NV_Read with OWNERREAD)
takes its password from `Tpm.owner_auth()`, the one place that decides it: b"" (the
TPM's factory state) unless the opener gave the password or a function loading it
(pinutil/owner_auth.py, the root-only file `pinutil owner protect` writes). A TPM that
refuses it gives one clear TpmUnavailable (`send_as_owner`), never a bare BAD_AUTH.

The owner password never crosses the TPM bus: an empty one goes in a password
session (nothing to hide, no extra command), any other through an HMAC session
started for the one command (`owner_authorisation` for SAPI, `_owner_esys_session`
for ESAPI), so the bus carries HMAC-SHA256 values keyed with it, never the password.
These sessions are not salted: the password is 32 random bytes (owner_auth.py), so
an HMAC over known data is no guessing oracle, and an unsalted StartAuthSession
costs the TPM no ECDH (tens of ms on TPM chips, before every PIN prompt). Salting
is needed only to hide a parameter: HierarchyChangeAuth's new password travels
encrypted in a session salted with the storage primary (DECRYPT).
"""
from __future__ import annotations

import os

from pinutil import errors
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.handles import EsysTr, TpmHandle
from pinutil.tpm.rc import TpmCommandError, check_rc, is_tss_layer
from pinutil.tpm.session_crypto import DIGEST_SIZE, SaltedSession, cp_hash
from pinutil.tpm.structs import (
    NvPublic,
    ecc_point,
    fill_tpm2b,
    is_storage_primary,
    password_auth,
    storage_primary_parameters,
    storage_primary_template,
    wipe_tpm2b,
)

_SESSION_ATTR_MASK = 0xFF
# The hierarchies `pinutil owner` protects: name -> (ESYS_TR, TPMA_PERMANENT bit).
HIERARCHIES = {
    "owner": (lib.ESYS_TR_RH_OWNER, lib.TPMA_PERMANENT_OWNERAUTHSET),
    "lockout": (lib.ESYS_TR_RH_LOCKOUT, lib.TPMA_PERMANENT_LOCKOUTAUTHSET),
}
# The owner hierarchy's Name (a permanent handle's Name is its handle), for cpHashes.
OWNER_NAME = lib.TPM2_RH_OWNER.to_bytes(4, "big")

class OwnerAuthRefused(errors.TpmUnavailable):
    """The TPM refused the owner password a command was authorised with (travels as
    TpmUnavailable: see pinutil/errors.py)."""


OWNER_REFUSED = (
    "the TPM refused the owner-hierarchy password ({which}): the owner hierarchy has a "
    "password this process does not hold. Root runs `pinutil status` to see its state "
    "(an interrupted `pinutil owner protect` is finished by running it again)")


# ---- process-wide libtss2 logging guard (see module docstring)
_logging_neutralised = False


def _neutralise_tss_logging() -> None:
    global _logging_neutralised
    if _logging_neutralised:
        return
    os.environ["TSS2_LOG"] = "all+NONE"
    os.environ.pop("TSS2_LOGFILE", None)
    _logging_neutralised = True


# The TCTIs we document, by their exact library file: the loader would otherwise
# dlopen() the bare name first ("device", "swtpm") and search every library
# directory for a file of that name before trying the tpm2-tss library.
_TCTI_LIBRARIES = {name: f"libtss2-tcti-{name}.so.0" for name in ("device", "swtpm", "mssim")}


def refuse_without_resource_manager(tcti: str) -> None:
    """TpmUnavailable for `device:` paths other than the kernel's resource manager.

    Without one (/dev/tpm0), every process's sessions and transient objects share the
    TPM's few slots (swtpm: 3 loaded sessions, 3 objects), and whatever a killed
    process had loaded stays until every user's PIN check fails with
    SESSION_MEMORY/OBJECT_MEMORY; /dev/tpm0 also admits one process at a time. A bare
    `device` means /dev/tpm0 to tpm2-tss. Simulators (swtpm, mssim) have no resource
    manager either; they serve tests and demos, where nothing else shares the TPM.
    """
    name, _, conf = tcti.partition(":")
    if name != "device":
        return
    device = conf.rsplit("/", 1)[-1]
    if not device.startswith("tpmrm"):
        raise errors.TpmUnavailable(
            f"refusing TCTI {tcti!r}: it has no resource manager (sessions and objects "
            "of killed processes would fill the TPM); use device:/dev/tpmrm0")


def _tcti_library_conf(tcti: str) -> str:
    name, sep, conf = tcti.partition(":")
    return _TCTI_LIBRARIES.get(name, name) + sep + conf


class Tpm:
    """An open TPM: TCTI + ESYS context. Use as a context manager or call close().

    `commands_sent` counts the commands sent through `send` (for cost measurements).
    """

    def __init__(self, tcti: str, timeout_ms: int | None = None, owner_auth=b"") -> None:
        """`owner_auth`: the owner hierarchy's password, or a function returning it
        (see `use_owner_auth`)."""
        refuse_without_resource_manager(tcti)  # before anything is opened
        _neutralise_tss_logging()
        self.commands_sent = 0
        self._tcti, self._timeout_ms = tcti, timeout_ms
        self.use_owner_auth(owner_auth)
        self._open()

    def _open(self) -> None:
        tcti, timeout_ms = self._tcti, self._timeout_ms
        self._tcti_pp = ffi.new("TSS2_TCTI_CONTEXT **")
        self._esys_pp = ffi.new("ESYS_CONTEXT **")
        rc = lib.Tss2_TctiLdr_Initialize(_tcti_library_conf(tcti).encode(), self._tcti_pp)
        if rc != 0:
            self._tcti_pp[0] = ffi.NULL
            from pinutil.tpm.diagnose import why_unreachable  # only when it failed

            raise errors.TpmUnavailable(
                f"cannot open the TPM {tcti!r}: {why_unreachable(tcti)} (0x{rc:x})")
        self._owner_auth_in_esys = False  # a new ESYS context knows no password yet
        rc = lib.Esys_Initialize(self._esys_pp, self._tcti_pp[0], ffi.NULL)
        if rc != 0:
            self.close()
            raise errors.TpmUnavailable(f"cannot start an ESYS context: 0x{rc:x}")
        if timeout_ms is not None:
            # Only asynchronous ESYS calls honour it (see module docstring).
            check_rc(lib.Esys_SetTimeout(self.esys, int(timeout_ms)), "Esys_SetTimeout")

    # ---- life cycle
    @property
    def esys(self):
        """The raw ESYS_CONTEXT*, for the ESAPI calls of this class."""
        ctx = self._esys_pp[0]
        if ctx == ffi.NULL:
            raise errors.TpmUnavailable("TPM context is closed")
        return ctx

    @property
    def sys(self):
        """ESYS's own SAPI context, for the SAPI calls of this class and tpm/sapi.py
        (same connection, no second TCTI)."""
        sys_pp = ffi.new("TSS2_SYS_CONTEXT **")
        check_rc(lib.Esys_GetSysContext(self.esys, sys_pp), "Esys_GetSysContext")
        return sys_pp[0]

    def close(self) -> None:
        """Finalise the ESYS context and the TCTI. Idempotent."""
        if self._esys_pp[0] != ffi.NULL:
            lib.Esys_Finalize(self._esys_pp)
        if self._tcti_pp[0] != ffi.NULL:
            lib.Tss2_TctiLdr_Finalize(self._tcti_pp)
            self._tcti_pp[0] = ffi.NULL

    def reconnect(self) -> None:
        """A new TCTI and ESYS context on the same TPM, for clean-up after a failed
        command: tpm2-tss 3.2.1's SAPI refuses every later command on a context whose
        last command failed in transport (TSS2_SYS_RC_BAD_SEQUENCE), so without this a
        session or transient key loaded before the failure could not be flushed. Every
        ESYS_TR of the old context is gone; raw TPM handles stay valid (on
        /dev/tpmrm0 closing the old connection already flushed them)."""
        self.close()
        self._open()

    def __enter__(self) -> Tpm:  # noqa: PYI034 - typing.Self would import typing on the login path
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(self, command: str, rc: int) -> None:
        """Account for a command that reached the TPM and check its return code: the
        one place where a TPM command's result becomes an exception (tpm/rc.py)."""
        self.commands_sent += 1
        check_rc(rc, command)

    def send_if_present(self, command: str, rc: int) -> bool:
        """send(), but False instead of an error when nothing is at the handle."""
        try:
            self.send(command, rc)
        except TpmCommandError as e:
            if e.code == lib.TPM2_RC_HANDLE:
                return False
            raise
        return True

    # ---- the owner hierarchy's password (module docstring)
    def use_owner_auth(self, source) -> None:
        """What owner-hierarchy commands authorise with from now on: bytes, or a
        function returning bytes, called at the first such command (so a PIN check,
        which needs none, never reads the password file; the function raises a clear
        error when the password exists but cannot be had)."""
        self._owner_source = source
        self._owner_auth: bytes | None = None
        self._owner_auth_in_esys = False

    def owner_auth(self) -> bytes:
        """The owner hierarchy's password for this connection (see use_owner_auth)."""
        value = self._owner_auth
        if value is None:
            source = self._owner_source
            value = source() if callable(source) else source
            if type(value) is not bytes:
                raise TypeError("the owner password must be bytes")
            self._owner_auth = value
        return value

    def _esys_owner(self) -> int:
        """ESYS_TR_RH_OWNER, with the owner password set in ESYS for ESAPI commands."""
        if not self._owner_auth_in_esys:
            self.set_auth(lib.ESYS_TR_RH_OWNER, self.owner_auth())
            self._owner_auth_in_esys = True
        return lib.ESYS_TR_RH_OWNER

    def send_as_owner(self, command: str, rc: int) -> None:
        """send() for a command authorised by the owner hierarchy: a refused password
        is one clear TpmUnavailable. (These commands carry one authorisation, the
        owner's, so BAD_AUTH can only be about it.)"""
        try:
            self.send(command, rc)
        except TpmCommandError as e:
            if e.code in (lib.TPM2_RC_BAD_AUTH, lib.TPM2_RC_AUTH_FAIL):
                which = "from the owner password file" if self._owner_auth else "empty"
                raise OwnerAuthRefused(OWNER_REFUSED.format(which=which)) from None
            raise

    def owner_authorisation(self, command_code: int, names: tuple, parameters: bytes):
        """(auths, session) authorising one SAPI command as owner, whose cpHash is made of
        `command_code`, the Names of its handles and its marshalled `parameters`: a
        password session for an empty password (session None), else a fresh unsalted
        HMAC session (module docstring) without continueSession: the TPM ends it after
        a successful command; after a failure the caller flushes `session.handle`."""
        value = self.owner_auth()
        if not value:
            return password_auth(b""), None
        session = self._start_unsalted_session()
        nonce, mac = session.authorise(cp_hash(command_code, names, parameters), value, 0,
                                       os.urandom(DIGEST_SIZE))
        auths = ffi.new("TSS2L_SYS_AUTH_COMMAND *")
        auths.count = 1
        entry = auths.auths[0]
        entry.sessionHandle = session.handle
        fill_tpm2b(entry.nonce, nonce)
        fill_tpm2b(entry.hmac, mac)
        return auths, session

    def _start_unsalted_session(self) -> SaltedSession:
        """StartAuthSession through SAPI: HMAC, SHA-256, no salt, no bind, no cipher."""
        nonce_caller = os.urandom(DIGEST_SIZE)
        nonce = ffi.new("TPM2B_NONCE *")
        fill_tpm2b(nonce, nonce_caller)
        sym = ffi.new("TPMT_SYM_DEF *")
        sym.algorithm = lib.TPM2_ALG_NULL
        handle = ffi.new("TPMI_SH_AUTH_SESSION *")
        nonce_tpm = ffi.new("TPM2B_NONCE *")
        self.send("StartAuthSession", lib.Tss2_Sys_StartAuthSession(
            self.sys, lib.TPM2_RH_NULL, lib.TPM2_RH_NULL, ffi.NULL, nonce,
            ffi.new("TPM2B_ENCRYPTED_SECRET *"), lib.TPM2_SE_HMAC, sym, lib.TPM2_ALG_SHA256,
            handle, nonce_tpm, ffi.NULL))
        return SaltedSession(TpmHandle(handle[0]), b"", nonce_caller,
                             bytes(ffi.buffer(nonce_tpm.buffer, nonce_tpm.size)))

    def _owner_esys_session(self) -> EsysTr | int:
        """The session an ESAPI owner command authorises with: ESYS_TR_PASSWORD for an
        empty password, else an unsalted HMAC session (ESYS computes its HMAC from the
        password set by _esys_owner) that the caller flushes (end_owner_session)."""
        if not self.owner_auth():
            return lib.ESYS_TR_PASSWORD
        return self._start_session(lib.ESYS_TR_NONE, lib.TPM2_SE_HMAC,
                                   lib.TPMA_SESSION_CONTINUESESSION)

    def end_owner_session(self, session: EsysTr | int) -> None:
        if type(session) is EsysTr:
            self.flush_quietly(session)

    def owner_auth_accepted(self) -> bool:
        """Whether the TPM accepts owner_auth(): one CreatePrimary of the storage
        primary, flushed at once. (A refused owner password does not count towards the
        TPM's dictionary-attack lockout: tests/test_owner_auth.py checks it.)"""
        try:
            key = self.create_storage_primary()[0]
        except OwnerAuthRefused:
            return False
        self.flush_quietly(key)
        return True

    def hierarchy_auth_set(self) -> dict[str, bool]:
        """Whether each of HIERARCHIES has a password (TPM2_PT_PERMANENT: ownerAuthSet,
        lockoutAuthSet). No authorisation needed: anyone may ask."""
        flags = self._property(lib.TPM2_PT_PERMANENT)
        return {name: bool(flags & bit) for name, (_, bit) in HIERARCHIES.items()}

    def platform_hierarchy_open(self) -> bool:
        """Whether the platform hierarchy is enabled (TPM2_PT_STARTUP_CLEAR phEnable)
        AND accepts the empty password: then anyone who may open the TPM can
        NV_UndefineSpace an owner index or TPM2_Clear the TPM without the owner or
        lockout password (firmware normally disables it or sets a random password
        before the OS starts; swtpm and some VMs leave it open). The probe is a
        CreatePrimary of our storage primary template under the platform, flushed at
        once: it changes nothing, and the platform hierarchy has no dictionary-attack
        lockout to trip."""
        if not self._property(lib.TPM2_PT_STARTUP_CLEAR) & lib.TPMA_STARTUP_CLEAR_PHENABLE:
            return False
        handle = ffi.new("TPM2_HANDLE *")
        try:
            self.send("CreatePrimary(platform)", lib.Tss2_Sys_CreatePrimary(
                self.sys, lib.TPM2_RH_PLATFORM, password_auth(b""),
                ffi.new("TPM2B_SENSITIVE_CREATE *"), storage_primary_template(),
                ffi.new("TPM2B_DATA *"), ffi.new("TPML_PCR_SELECTION *"),
                handle, ffi.new("TPM2B_PUBLIC *"), ffi.new("TPM2B_CREATION_DATA *"),
                ffi.new("TPM2B_DIGEST *"), ffi.new("TPMT_TK_CREATION *"),
                ffi.new("TPM2B_NAME *"), ffi.new("TSS2L_SYS_AUTH_RESPONSE *")))
        except TpmCommandError as e:
            if e.code in (lib.TPM2_RC_BAD_AUTH, lib.TPM2_RC_AUTH_FAIL, lib.TPM2_RC_HIERARCHY):
                return False
            raise
        self.flush_quietly(TpmHandle(handle[0]))
        return True

    def _property(self, prop: int) -> int:
        """The value of one TPM2_CAP_TPM_PROPERTIES property (no authorisation)."""
        more = ffi.new("TPMI_YES_NO *")
        data_pp = ffi.new("TPMS_CAPABILITY_DATA **")
        none = lib.ESYS_TR_NONE
        self.send("GetCapability", lib.Esys_GetCapability(
            self.esys, none, none, none, lib.TPM2_CAP_TPM_PROPERTIES, prop, 1, more, data_pp))
        try:
            props = data_pp[0].data.tpmProperties
            if props.count < 1 or props.tpmProperty[0].property != prop:
                raise errors.TpmUnavailable(f"the TPM did not report property 0x{prop:x}")
            return props.tpmProperty[0].value
        finally:
            lib.Esys_Free(data_pp[0])

    def change_hierarchy_auth(self, hierarchy: str, old: bytes, new: bytes,
                              salt_key_name: bytes | None) -> None:
        """HierarchyChangeAuth of `hierarchy` ("owner" or "lockout") from `old` to
        `new`. Neither crosses the bus: the command is authorised by an HMAC session
        salted with the storage primary (keyed with `old`), whose DECRYPT attribute
        encrypts `new` (AES-128-CFB). That primary must have the recorded salt key's
        Name, `salt_key_name`, as for a PIN (sapi.require_salt_key_name): a key an
        interposer supplied instead is refused before the session, which it could
        open and so read `new` (review F15). None (no record yet): the TPM's answer
        is believed, which hides `new` from a bus observer, not from an interposer
        (README, threat model).
        The owner's new password becomes this connection's."""
        from pinutil.tpm import sapi  # it imports this module: here, not at the top

        tr = HIERARCHIES[hierarchy][0]
        primary = self.storage_primary()  # as owner: the current owner password
        try:
            if salt_key_name is not None:
                sapi.require_salt_key_name(self.get_name(primary), salt_key_name)
            session = self.salted_session(primary, lib.TPMA_SESSION_DECRYPT
                                          | lib.TPMA_SESSION_CONTINUESESSION)
        finally:
            self.flush_quietly(primary)
        value = ffi.new("TPM2B_AUTH *")
        fill_tpm2b(value, new)
        none = lib.ESYS_TR_NONE
        self.set_auth(tr, old)
        try:
            self.send(f"HierarchyChangeAuth({hierarchy})", lib.Esys_HierarchyChangeAuth(
                self.esys, tr, session, none, none, value))
        finally:
            wipe_tpm2b(value)
            self.flush_quietly(session)
            if hierarchy == "owner":  # whatever happened, ask again at the next use
                self._owner_auth_in_esys = False
        if hierarchy == "owner":
            self.use_owner_auth(new)

    # ---- flushing: one pair of methods for both kinds of handle
    def flush(self, handle: EsysTr | TpmHandle) -> None:
        """FlushContext a transient object or session: an ESYS_TR through ESAPI (which
        then forgets it), a TPM handle through SAPI. A bare int is refused: which kind
        it is cannot be told, and the wrong guess flushes nothing."""
        kind = type(handle)
        if kind is EsysTr:
            self.send("FlushContext", lib.Esys_FlushContext(self.esys, handle))
        elif kind is TpmHandle:
            self.send("FlushContext", lib.Tss2_Sys_FlushContext(self.sys, handle))
        else:
            raise TypeError(f"flush takes an EsysTr or a TpmHandle, not {kind.__name__}")

    def flush_quietly(self, handle: EsysTr | TpmHandle) -> None:
        """flush() for clean-up paths: a vanished handle or a dead TPM is not an error.

        A TPM handle is tried once more on a fresh connection when a TSS-layer failure
        left the context unusable (see reconnect); an ESYS_TR cannot be, as it dies
        with its context. Without a resource manager a handle we cannot flush stays
        loaded; with /dev/tpmrm0 the kernel flushes it when we close."""
        if type(handle) not in (EsysTr, TpmHandle):
            raise TypeError(f"flush takes an EsysTr or a TpmHandle, not {type(handle).__name__}")
        for attempt in range(2):
            try:
                self.flush(handle)
                return
            except TpmCommandError as e:
                if not is_tss_layer(e.rc):
                    return  # the TPM itself refused (e.g. TPM_RC_HANDLE: already gone)
            except errors.TpmUnavailable:
                if self._esys_pp[0] == ffi.NULL:
                    return  # closed (a reconnect failed): nothing to flush with
            if attempt or type(handle) is EsysTr:
                return
            try:
                self.reconnect()  # a TSS-layer failure: the context is stuck, not the TPM
            except errors.TpmUnavailable:
                return

    # ---- ESYS_TR objects
    def tr_if_present(self, handle: int) -> EsysTr | None:
        """ESYS_TR for a TPM handle (sends ReadPublic / NV_ReadPublic), or None when
        nothing is at `handle` (TPM_RC_HANDLE)."""
        tr = ffi.new("ESYS_TR *")
        none = lib.ESYS_TR_NONE
        if not self.send_if_present("TR_FromTPMPublic", lib.Esys_TR_FromTPMPublic(
                self.esys, handle, none, none, none, tr)):
            return None
        return EsysTr(tr[0])

    def tpm_handle(self, tr: EsysTr) -> TpmHandle:
        """The TPM handle behind an ESYS_TR (no TPM command)."""
        handle = ffi.new("TPM2_HANDLE *")
        check_rc(lib.Esys_TR_GetTpmHandle(self.esys, tr, handle), "Esys_TR_GetTpmHandle")
        return TpmHandle(handle[0])

    def close_tr(self, tr: EsysTr) -> None:
        """Forget an ESYS_TR locally (no TPM command)."""
        p = ffi.new("ESYS_TR *", tr)
        check_rc(lib.Esys_TR_Close(self.esys, p), "Esys_TR_Close")

    def set_auth(self, tr: EsysTr, auth: bytes) -> None:
        """Set the authValue ESYS uses for `tr` (max. 64 bytes; the TPM may allow less)."""
        value = ffi.new("TPM2B_AUTH *")
        fill_tpm2b(value, auth)
        try:
            check_rc(lib.Esys_TR_SetAuth(self.esys, tr, value), "Esys_TR_SetAuth")
        finally:
            wipe_tpm2b(value)

    def get_name(self, tr: EsysTr) -> bytes:
        """The Name ESYS holds for `tr` (no TPM command)."""
        name_pp = ffi.new("TPM2B_NAME **")
        check_rc(lib.Esys_TR_GetName(self.esys, tr, name_pp), "Esys_TR_GetName")
        try:
            return bytes(ffi.buffer(name_pp[0].name, name_pp[0].size))
        finally:
            lib.Esys_Free(name_pp[0])

    # ---- capabilities
    def get_command_supported(self, cc: int) -> bool:
        """True if the TPM lists command code `cc` (GetCapability TPM2_CAP_COMMANDS)."""
        more = ffi.new("TPMI_YES_NO *")
        data_pp = ffi.new("TPMS_CAPABILITY_DATA **")
        none = lib.ESYS_TR_NONE
        self.send("GetCapability", lib.Esys_GetCapability(
            self.esys, none, none, none, lib.TPM2_CAP_COMMANDS, cc, 1, more, data_pp))
        try:
            cmds = data_pp[0].data.command
            return any((cmds.commandAttributes[i] & lib.TPMA_CC_COMMANDINDEX_MASK) == cc
                       for i in range(cmds.count))
        finally:
            lib.Esys_Free(data_pp[0])

    # ---- objects
    def create_storage_primary(self) -> tuple[TpmHandle, bytes, bytes]:
        """CreatePrimary of our storage primary template as owner (owner_auth()),
        through SAPI: (handle, x, y) of the new transient key.

        The one CreatePrimary in pinutil. SAPI because the login path's salt key check
        must see the TPM's answer itself, and flush what it refuses (tpm/sapi.py); the
        answer must be exactly our template, else TpmUnavailable."""
        handle = ffi.new("TPM2_HANDLE *")
        out_public = ffi.new("TPM2B_PUBLIC *")
        auths, session = self.owner_authorisation(
            lib.TPM2_CC_CreatePrimary, (OWNER_NAME,), storage_primary_parameters())
        try:
            self.send_as_owner("CreatePrimary", lib.Tss2_Sys_CreatePrimary(
                self.sys, lib.TPM2_RH_OWNER, auths,
                ffi.new("TPM2B_SENSITIVE_CREATE *"), storage_primary_template(),
                ffi.new("TPM2B_DATA *"), ffi.new("TPML_PCR_SELECTION *"),
                handle, out_public, ffi.new("TPM2B_CREATION_DATA *"),
                ffi.new("TPM2B_DIGEST *"), ffi.new("TPMT_TK_CREATION *"),
                ffi.new("TPM2B_NAME *"), ffi.new("TSS2L_SYS_AUTH_RESPONSE *")))
        except BaseException:
            if session is not None:  # a refused command leaves the session loaded
                self.flush_quietly(session.handle)
            raise
        key = TpmHandle(handle[0])
        if not is_storage_primary(out_public.publicArea):
            self.flush_quietly(key)
            raise errors.TpmUnavailable("the TPM returned a malformed storage primary")
        return (key, *ecc_point(out_public.publicArea))

    def storage_primary(self) -> EsysTr:
        """create_storage_primary() as an ESYS_TR, for ESAPI parents and salted
        sessions (one more command: ReadPublic). The caller flushes it."""
        key = self.create_storage_primary()[0]
        try:
            tr = self.tr_if_present(key)
        except BaseException:
            self.flush_quietly(key)
            raise
        if tr is None:
            raise errors.TpmUnavailable("the storage primary vanished after CreatePrimary")
        return tr

    def read_public(self, tr: EsysTr):
        """ReadPublic: a copy of the object's TPM2B_PUBLIC (cffi-owned)."""
        none = lib.ESYS_TR_NONE
        public_pp = ffi.new("TPM2B_PUBLIC **")
        self.send("ReadPublic", lib.Esys_ReadPublic(
            self.esys, tr, none, none, none, public_pp, ffi.NULL, ffi.NULL))
        try:
            public = ffi.new("TPM2B_PUBLIC *")
            public[0] = public_pp[0][0]
            return public
        finally:
            lib.Esys_Free(public_pp[0])

    def create_loaded(self, parent: EsysTr, session: EsysTr, sensitive, template) -> EsysTr:
        """Create an object under `parent` from `sensitive` and `template`, then Load
        it, both authorised by `session`; returns the transient ESYS_TR (flush it)."""
        none = lib.ESYS_TR_NONE
        private = ffi.new("TPM2B_PRIVATE **")
        public = ffi.new("TPM2B_PUBLIC **")
        loaded = ffi.new("ESYS_TR *")
        self.send("Create", lib.Esys_Create(
            self.esys, parent, session, none, none, sensitive, template,
            ffi.new("TPM2B_DATA *"), ffi.new("TPML_PCR_SELECTION *"), private, public,
            ffi.NULL, ffi.NULL, ffi.NULL))
        try:
            self.send("Load", lib.Esys_Load(
                self.esys, parent, session, none, none, private[0], public[0], loaded))
        finally:
            lib.Esys_Free(private[0])
            lib.Esys_Free(public[0])
        return EsysTr(loaded[0])

    def evict_control(self, tr: EsysTr, persistent: int) -> EsysTr:
        """Owner EvictControl (owner_auth()): make the transient `tr`
        persistent at `persistent`, or evict the persistent `tr` (then ESYS_TR_NONE
        comes back)."""
        out = ffi.new("ESYS_TR *")
        none = lib.ESYS_TR_NONE
        session = self._owner_esys_session()
        try:
            self.send_as_owner("EvictControl", lib.Esys_EvictControl(
                self.esys, self._esys_owner(), tr, session, none, none, persistent, out))
        finally:
            self.end_owner_session(session)
        return EsysTr(out[0])

    # ---- sessions
    def salted_session(
        self,
        primary: EsysTr,
        attributes: int = (lib.TPMA_SESSION_DECRYPT | lib.TPMA_SESSION_ENCRYPT
                           | lib.TPMA_SESSION_CONTINUESESSION),
        session_type: int = lib.TPM2_SE_HMAC,
    ) -> EsysTr:
        """Session salted by `primary`, AES-128-CFB parameter encryption, SHA256.

        The TPM only accepts DECRYPT/ENCRYPT when the command's first parameter /
        response parameter is a sized buffer: adjust with `set_session_attributes`.
        """
        return self._start_session(primary, session_type, attributes)

    def policy_session(self, salt_key: int = lib.ESYS_TR_NONE) -> EsysTr:
        """Policy session (continueSession), salted by `salt_key` unless it is ESYS_TR_NONE."""
        return self._start_session(salt_key, lib.TPM2_SE_POLICY, lib.TPMA_SESSION_CONTINUESESSION)

    def trial_session(self) -> EsysTr:
        """Unsalted trial policy session, to compute a policy digest."""
        return self._start_session(lib.ESYS_TR_NONE, lib.TPM2_SE_TRIAL,
                                   lib.TPMA_SESSION_CONTINUESESSION)

    def _start_session(self, tpm_key: int, session_type: int, attributes: int) -> EsysTr:
        sym = ffi.new("TPMT_SYM_DEF *")
        sym.algorithm = lib.TPM2_ALG_AES
        sym.keyBits.aes = 128
        sym.mode.aes = lib.TPM2_ALG_CFB
        session = ffi.new("ESYS_TR *")
        none = lib.ESYS_TR_NONE
        self.send("StartAuthSession", lib.Esys_StartAuthSession(
            self.esys, tpm_key, none, none, none, none,
            ffi.NULL, session_type, sym, lib.TPM2_ALG_SHA256, session))
        tr = EsysTr(session[0])
        try:
            self.set_session_attributes(tr, attributes)
        except BaseException:
            self.flush_quietly(tr)
            raise
        return tr

    def set_session_attributes(self, session: EsysTr, attributes: int) -> None:
        """Replace all attributes of `session` (no TPM command)."""
        check_rc(lib.Esys_TRSess_SetAttributes(self.esys, session, attributes, _SESSION_ATTR_MASK),
                 "Esys_TRSess_SetAttributes")

    # ---- policy
    def policy_command_code(self, session: EsysTr, cc: int) -> None:
        none = lib.ESYS_TR_NONE
        self.send("PolicyCommandCode", lib.Esys_PolicyCommandCode(
            self.esys, session, none, none, none, cc))

    def policy_auth_value(self, session: EsysTr) -> None:
        none = lib.ESYS_TR_NONE
        self.send("PolicyAuthValue", lib.Esys_PolicyAuthValue(self.esys, session, none, none, none))

    def policy_nv_written(self, session: EsysTr, written: bool) -> None:
        none = lib.ESYS_TR_NONE
        self.send("PolicyNvWritten", lib.Esys_PolicyNvWritten(
            self.esys, session, none, none, none, 1 if written else 0))

    def policy_digest(self, session: EsysTr) -> bytes:
        """PolicyGetDigest of a policy or trial session."""
        digest_pp = ffi.new("TPM2B_DIGEST **")
        none = lib.ESYS_TR_NONE
        self.send("PolicyGetDigest", lib.Esys_PolicyGetDigest(
            self.esys, session, none, none, none, digest_pp))
        try:
            return bytes(ffi.buffer(digest_pp[0].buffer, digest_pp[0].size))
        finally:
            lib.Esys_Free(digest_pp[0])

    # ---- NV (reading is on the login path: tpm/sapi.py)
    def nv_define_space(self, public: NvPublic, auth: bytes,
                        session: int | None = None) -> EsysTr:
        """NV_DefineSpace as owner (owner_auth()), authorised by `session` (the
        caller's, which encrypts `auth`) or by _owner_esys_session(); returns the new
        index's ESYS_TR (auth already set)."""
        info = ffi.new("TPM2B_NV_PUBLIC *")
        info.nvPublic.nvIndex = public.handle
        info.nvPublic.nameAlg = public.name_alg
        info.nvPublic.attributes = public.attributes
        fill_tpm2b(info.nvPublic.authPolicy, public.auth_policy)
        info.nvPublic.dataSize = public.data_size
        value = ffi.new("TPM2B_AUTH *")
        fill_tpm2b(value, auth)
        nv = ffi.new("ESYS_TR *")
        none = lib.ESYS_TR_NONE
        own_session = self._owner_esys_session() if session is None else None
        try:
            self.send_as_owner("NV_DefineSpace", lib.Esys_NV_DefineSpace(
                self.esys, self._esys_owner(), session if own_session is None else own_session,
                none, none, value, info, nv))
        finally:
            wipe_tpm2b(value)
            if own_session is not None:
                self.end_owner_session(own_session)
        return EsysTr(nv[0])

    def nv_undefine_space(self, nv: EsysTr) -> None:
        """Owner NV_UndefineSpace (owner_auth()); ESYS forgets `nv` on success."""
        none = lib.ESYS_TR_NONE
        session = self._owner_esys_session()
        try:
            self.send_as_owner("NV_UndefineSpace", lib.Esys_NV_UndefineSpace(
                self.esys, self._esys_owner(), nv, session, none, none))
        finally:
            self.end_owner_session(session)

    def nv_write(self, auth_handle: EsysTr, nv: EsysTr, data: bytes, session: EsysTr,
                 offset: int = 0) -> None:
        """NV_Write `data` at `offset`, authorised by `session` on `auth_handle`."""
        buf = ffi.new("TPM2B_MAX_NV_BUFFER *")
        fill_tpm2b(buf, data)
        none = lib.ESYS_TR_NONE
        self.send("NV_Write", lib.Esys_NV_Write(
            self.esys, auth_handle, nv, session, none, none, buf, offset))
