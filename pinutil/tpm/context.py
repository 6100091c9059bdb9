"""One ESYS context on one TPM, over our own cffi binding `pinutil.tpm._tss`.

Errors: TPM-reported failures raise `TpmCommandError` (carrying the raw and the
normalised return code, so callers branch on the `RC_*` constants below, never on
message text). Transport failures (no socket, IO error, a TCTI that cannot start)
raise `errors.TpmUnavailable`. `TpmCommandError` is itself a `TpmUnavailable`
("the TPM failed"): a TPM error that a caller did not expect and did not translate
still fails closed as "TPM unavailable" instead of leaking out as something else.

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
"""
from __future__ import annotations

import os
import struct

from pinutil import errors
from pinutil.tpm._tss import ffi, lib
from pinutil.tpm.session_crypto import (
    sha256,  # builtin; hashlib would load OpenSSL (~2 ms)
)

# ---- TPM return codes, normalised (format-1 parameter/handle/session numbers stripped)
RC_SUCCESS = 0x000
RC_INITIALIZE = 0x100
RC_AUTH_UNAVAILABLE = 0x12F
RC_NV_LOCKED = 0x148
RC_NV_AUTHORIZATION = 0x149
RC_NV_UNINITIALIZED = 0x14A
RC_NV_SPACE = 0x14B
RC_NV_DEFINED = 0x14C
RC_ATTRIBUTES = 0x082
RC_VALUE = 0x084
RC_HANDLE = 0x08B
RC_SIZE = 0x095
RC_POLICY_FAIL = 0x09D
RC_BAD_AUTH = 0x0A2
RC_OBJECT_MEMORY = 0x902
RC_SESSION_MEMORY = 0x903
RC_LOCKOUT = 0x921

_LAYER_MASK = 0xFF0000
_TCTI_LAYER = 0x0A0000
_RESMGR_LAYERS = (0x0B0000, 0x0C0000)
_FMT1 = 0x080
# TSS base codes that mean "the TPM could not be talked to" in any TSS layer.
_TRANSPORT_BASE_RCS = frozenset({1, 8, 9, 10, 17, 19})  # general, no conn, try again, IO, malformed, short

# ---- TSS handles and session attributes used by callers
ESYS_TR_NONE = lib.ESYS_TR_NONE
ESYS_TR_PASSWORD = lib.ESYS_TR_PASSWORD
ESYS_TR_RH_OWNER = lib.ESYS_TR_RH_OWNER
SESSION_CONTINUE = lib.TPMA_SESSION_CONTINUESESSION
SESSION_DECRYPT = lib.TPMA_SESSION_DECRYPT
SESSION_ENCRYPT = lib.TPMA_SESSION_ENCRYPT
_SESSION_ATTR_MASK = 0xFF
_TRANSIENT_FIRST = 0x80000000
_LOADED_SESSION_FIRST = 0x02000000

_STORAGE_PRIMARY_ATTRS = (
    lib.TPMA_OBJECT_FIXEDTPM | lib.TPMA_OBJECT_FIXEDPARENT | lib.TPMA_OBJECT_SENSITIVEDATAORIGIN
    | lib.TPMA_OBJECT_USERWITHAUTH | lib.TPMA_OBJECT_NODA | lib.TPMA_OBJECT_RESTRICTED
    | lib.TPMA_OBJECT_DECRYPT
)


def normalize_rc(rc: int) -> int:
    """TPM return code without the handle/parameter/session number of format-1 codes.

    0x9a2 (BAD_AUTH on session 1) -> 0x0a2 == RC_BAD_AUTH. TSS-layer codes (TCTI,
    ESAPI, ...) and format-0 codes are returned unchanged.
    """
    if rc & _LAYER_MASK:
        return rc
    if rc & _FMT1:
        return rc & 0xBF  # keep F and the error number; drop P (0x40) and N (0xF00)
    return rc


def is_transport_error(rc: int) -> bool:
    """True when `rc` says the TPM was not reached or its answer was unusable."""
    layer = rc & _LAYER_MASK
    if layer == 0:
        return False
    if layer == _TCTI_LAYER or layer in _RESMGR_LAYERS:
        return True
    return (rc & 0xFFFF) in _TRANSPORT_BASE_RCS


def describe_rc(rc: int) -> str:
    """tpm2-tss's text for a return code: for logs and messages, never for branching."""
    return ffi.string(lib.Tss2_RC_Decode(rc)).decode("ascii", "replace")


class TpmCommandError(errors.TpmUnavailable):
    """A TPM command failed with a TPM (or TSS) return code; `.code` is normalised."""

    def __init__(self, command: str, rc: int) -> None:
        super().__init__(f"TPM command {command} failed: 0x{rc:x} ({describe_rc(rc)})")
        self.command = command
        self.rc = rc
        self.code = normalize_rc(rc)


def check_rc(rc: int, command: str) -> None:
    """Raise the right exception for a non-zero return code of `command`."""
    if rc == 0:
        return
    if is_transport_error(rc):
        raise errors.TpmUnavailable(f"TPM not reachable ({command}: 0x{rc:x})")
    raise TpmCommandError(command, rc)


# ---- process-wide libtss2 logging guard (see module docstring)
_logging_neutralised = False


def _neutralise_tss_logging() -> None:
    global _logging_neutralised
    if _logging_neutralised:
        return
    os.environ["TSS2_LOG"] = "all+NONE"
    os.environ.pop("TSS2_LOGFILE", None)
    _logging_neutralised = True


class NvPublic:
    """TPMS_NV_PUBLIC of an NV index (a plain class: `dataclasses` costs ~10 ms to import)."""

    __slots__ = ("attributes", "auth_policy", "data_size", "handle", "name_alg")

    def __init__(self, handle: int, name_alg: int, attributes: int, auth_policy: bytes,
                 data_size: int) -> None:
        self.handle = handle
        self.name_alg = name_alg
        self.attributes = attributes
        self.auth_policy = auth_policy
        self.data_size = data_size

    def __eq__(self, other: object) -> bool:
        return type(other) is NvPublic and self.marshal() == other.marshal()

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (f"NvPublic(handle=0x{self.handle:08x}, name_alg=0x{self.name_alg:x}, "
                f"attributes=0x{self.attributes:08x}, auth_policy={self.auth_policy.hex()}, "
                f"data_size={self.data_size})")

    @property
    def nv_type(self) -> int:
        return (self.attributes & lib.TPMA_NV_TPM2_NT_MASK) >> lib.TPMA_NV_TPM2_NT_SHIFT

    def marshal(self) -> bytes:
        """Big-endian TPMS_NV_PUBLIC, as the TPM hashes it for the Name."""
        return (
            struct.pack(">IHIH", self.handle, self.name_alg, self.attributes, len(self.auth_policy))
            + self.auth_policy
            + struct.pack(">H", self.data_size)
        )

    def name(self) -> bytes:
        """The index's Name (nameAlg || H(public)); only SHA256 is supported."""
        if self.name_alg != lib.TPM2_ALG_SHA256:
            raise ValueError("only SHA256 NV names are computed")
        return struct.pack(">H", self.name_alg) + sha256(self.marshal()).digest()


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


def fill_tpm2b(tpm2b, value: bytes, field: str = "buffer") -> None:
    """Copy `value` into a TPM2B's byte array (`field`) and set its size; refuse what
    does not fit (cffi's memmove would not)."""
    buffer = getattr(tpm2b, field)
    if len(value) > len(buffer):
        raise ValueError(f"{len(value)} bytes do not fit a TPM2B of {len(buffer)}")
    tpm2b.size = len(value)
    ffi.memmove(buffer, value, len(value))


def wipe_tpm2b(tpm2b, field: str = "buffer") -> None:
    """Zero the bytes a TPM2B holds (a secret we put there)."""
    ffi.memmove(getattr(tpm2b, field), bytes(tpm2b.size), tpm2b.size)


def storage_primary_template():
    """TPM2B_PUBLIC of our ECC P-256 storage primary (owner hierarchy, noDA).

    The same template always yields the same key from the same owner seed; it is also
    the salt key of the login path's PIN check (tpm/sapi.py).
    """
    public = ffi.new("TPM2B_PUBLIC *")
    area = public.publicArea
    area.type = lib.TPM2_ALG_ECC
    area.nameAlg = lib.TPM2_ALG_SHA256
    area.objectAttributes = _STORAGE_PRIMARY_ATTRS
    ecc = area.parameters.eccDetail
    ecc.symmetric.algorithm = lib.TPM2_ALG_AES
    ecc.symmetric.keyBits.aes = 128
    ecc.symmetric.mode.aes = lib.TPM2_ALG_CFB
    ecc.scheme.scheme = lib.TPM2_ALG_NULL
    ecc.curveID = lib.TPM2_ECC_NIST_P256
    ecc.kdf.scheme = lib.TPM2_ALG_NULL
    return public


def storage_primary_name(x: bytes, y: bytes) -> bytes:
    """The Name of our storage primary with public point (x, y): nameAlg || SHA-256 of
    its marshalled public area (Part 2, 12.2.4), which is the template above with that
    point. The salt key check compares it with the Name root recorded."""
    if len(x) != 32 or len(y) != 32:
        raise ValueError("a P-256 point has 32-byte coordinates")
    area = (struct.pack(">HHIH", lib.TPM2_ALG_ECC, lib.TPM2_ALG_SHA256, _STORAGE_PRIMARY_ATTRS, 0)
            + struct.pack(">HHHHHH", lib.TPM2_ALG_AES, 128, lib.TPM2_ALG_CFB, lib.TPM2_ALG_NULL,
                          lib.TPM2_ECC_NIST_P256, lib.TPM2_ALG_NULL)
            + struct.pack(">H", 32) + x + struct.pack(">H", 32) + y)
    return struct.pack(">H", lib.TPM2_ALG_SHA256) + sha256(area).digest()


class Tpm:
    """An open TPM: TCTI + ESYS context. Use as a context manager or call close().

    `commands_sent` counts ESYS calls that reach the TPM (for cost measurements).
    """

    def __init__(self, tcti: str, timeout_ms: int | None = None) -> None:
        refuse_without_resource_manager(tcti)  # before anything is opened
        _neutralise_tss_logging()
        self.commands_sent = 0
        self._tcti, self._timeout_ms = tcti, timeout_ms
        self._open()

    def _open(self) -> None:
        tcti, timeout_ms = self._tcti, self._timeout_ms
        self._tcti_pp = ffi.new("TSS2_TCTI_CONTEXT **")
        self._esys_pp = ffi.new("ESYS_CONTEXT **")
        rc = lib.Tss2_TctiLdr_Initialize(_tcti_library_conf(tcti).encode(), self._tcti_pp)
        if rc != 0:
            self._tcti_pp[0] = ffi.NULL
            raise errors.TpmUnavailable(f"cannot open the TPM ({tcti.split(':', 1)[0]}): 0x{rc:x}")
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
        """The raw ESYS_CONTEXT* for code that calls `pinutil.tpm._tss.lib` directly."""
        ctx = self._esys_pp[0]
        if ctx == ffi.NULL:
            raise errors.TpmUnavailable("TPM context is closed")
        return ctx

    @property
    def sys(self):
        """ESYS's own SAPI context, for tpm/sapi.py (same connection, no second TCTI)."""
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
        """Account for a command that reached the TPM and check its return code.

        Also used by tpm/sapi.py, whose SAPI calls share this connection."""
        self.commands_sent += 1
        check_rc(rc, command)

    def send_if_present(self, command: str, rc: int) -> bool:
        """send(), but False instead of an error when nothing is at the handle."""
        try:
            self.send(command, rc)
        except TpmCommandError as e:
            if e.code == RC_HANDLE:
                return False
            raise
        return True

    # ---- ESYS_TR objects
    def tr_if_present(self, handle: int) -> int | None:
        """ESYS_TR for a TPM handle (sends ReadPublic / NV_ReadPublic), or None when
        nothing is at `handle` (TPM_RC_HANDLE)."""
        tr = ffi.new("ESYS_TR *")
        if not self.send_if_present("TR_FromTPMPublic", lib.Esys_TR_FromTPMPublic(
                self.esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, tr)):
            return None
        return tr[0]

    def close_tr(self, tr: int) -> None:
        """Forget an ESYS_TR locally (no TPM command)."""
        p = ffi.new("ESYS_TR *", tr)
        check_rc(lib.Esys_TR_Close(self.esys, p), "Esys_TR_Close")

    def set_auth(self, tr: int, auth: bytes) -> None:
        """Set the authValue ESYS uses for `tr` (max. 64 bytes; the TPM may allow less)."""
        value = ffi.new("TPM2B_AUTH *")
        fill_tpm2b(value, auth)
        try:
            check_rc(lib.Esys_TR_SetAuth(self.esys, tr, value), "Esys_TR_SetAuth")
        finally:
            wipe_tpm2b(value)

    def get_name(self, tr: int) -> bytes:
        """The Name ESYS holds for `tr` (no TPM command)."""
        name_pp = ffi.new("TPM2B_NAME **")
        check_rc(lib.Esys_TR_GetName(self.esys, tr, name_pp), "Esys_TR_GetName")
        try:
            return bytes(ffi.buffer(name_pp[0].name, name_pp[0].size))
        finally:
            lib.Esys_Free(name_pp[0])

    def flush(self, handle: int) -> None:
        """FlushContext a transient object or session."""
        self.send("FlushContext", lib.Esys_FlushContext(self.esys, handle))

    def flush_quietly(self, handle: int) -> None:
        """flush() for clean-up paths: a vanished handle or a dead TPM is not an error here."""
        try:
            self.flush(handle)
        except errors.TpmUnavailable:
            pass

    # ---- capabilities
    def get_command_supported(self, cc: int) -> bool:
        """True if the TPM lists command code `cc` (GetCapability TPM2_CAP_COMMANDS)."""
        def listed(data) -> bool:
            cmds = data.command
            return any((cmds.commandAttributes[i] & lib.TPMA_CC_COMMANDINDEX_MASK) == cc
                       for i in range(cmds.count))
        return self._capability(lib.TPM2_CAP_COMMANDS, cc, 1, listed)

    def loaded_handles(self) -> list[int]:
        """Transient objects and loaded sessions in the TPM, whoever made them (one
        TPM-wide list without a resource manager): what a leak check looks at."""
        found = []
        for first in (_TRANSIENT_FIRST, _LOADED_SESSION_FIRST):
            handles = self._capability(
                lib.TPM2_CAP_HANDLES, first, 64,
                lambda data: [data.handles.handle[i] for i in range(data.handles.count)])
            found += [h for h in handles if h >> 24 == first >> 24]
        return found

    def _capability(self, capability: int, first: int, count: int, read):
        """read(TPMU_CAPABILITIES) of one GetCapability call (one page is enough here)."""
        more = ffi.new("TPMI_YES_NO *")
        data_pp = ffi.new("TPMS_CAPABILITY_DATA **")
        self.send("GetCapability", lib.Esys_GetCapability(
            self.esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
            capability, first, count, more, data_pp))
        try:
            return read(data_pp[0].data)
        finally:
            lib.Esys_Free(data_pp[0])

    # ---- keys and sessions
    def storage_primary(self) -> int:
        """Transient ECC P-256 storage primary in the owner hierarchy (noDA); flush it."""
        public = storage_primary_template()
        sensitive = ffi.new("TPM2B_SENSITIVE_CREATE *")
        outside = ffi.new("TPM2B_DATA *")
        pcrs = ffi.new("TPML_PCR_SELECTION *")
        handle = ffi.new("ESYS_TR *")
        out_public = ffi.new("TPM2B_PUBLIC **")
        creation_data = ffi.new("TPM2B_CREATION_DATA **")
        creation_hash = ffi.new("TPM2B_DIGEST **")
        ticket = ffi.new("TPMT_TK_CREATION **")
        self.send("CreatePrimary", lib.Esys_CreatePrimary(
            self.esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
            sensitive, public, outside, pcrs,
            handle, out_public, creation_data, creation_hash, ticket))
        for p in (out_public, creation_data, creation_hash, ticket):
            lib.Esys_Free(p[0])
        return handle[0]

    def salted_session(
        self,
        primary: int,
        attributes: int = SESSION_DECRYPT | SESSION_ENCRYPT | SESSION_CONTINUE,
        session_type: int = lib.TPM2_SE_HMAC,
    ) -> int:
        """Session salted by `primary`, AES-128-CFB parameter encryption, SHA256.

        The TPM only accepts DECRYPT/ENCRYPT when the command's first parameter /
        response parameter is a sized buffer: adjust with `set_session_attributes`.
        """
        return self._start_session(primary, session_type, attributes)

    def policy_session(self, salt_key: int = ESYS_TR_NONE) -> int:
        """Policy session (continueSession), salted by `salt_key` unless it is ESYS_TR_NONE."""
        return self._start_session(salt_key, lib.TPM2_SE_POLICY, SESSION_CONTINUE)

    def trial_session(self) -> int:
        """Unsalted trial policy session, to compute a policy digest."""
        return self._start_session(ESYS_TR_NONE, lib.TPM2_SE_TRIAL, SESSION_CONTINUE)

    def _start_session(self, tpm_key: int, session_type: int, attributes: int) -> int:
        sym = ffi.new("TPMT_SYM_DEF *")
        sym.algorithm = lib.TPM2_ALG_AES
        sym.keyBits.aes = 128
        sym.mode.aes = lib.TPM2_ALG_CFB
        session = ffi.new("ESYS_TR *")
        self.send("StartAuthSession", lib.Esys_StartAuthSession(
            self.esys, tpm_key, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
            ffi.NULL, session_type, sym, lib.TPM2_ALG_SHA256, session))
        try:
            self.set_session_attributes(session[0], attributes)
        except BaseException:
            self.flush_quietly(session[0])
            raise
        return session[0]

    def set_session_attributes(self, session: int, attributes: int) -> None:
        """Replace all attributes of `session` (no TPM command)."""
        check_rc(lib.Esys_TRSess_SetAttributes(self.esys, session, attributes, _SESSION_ATTR_MASK),
                 "Esys_TRSess_SetAttributes")

    # ---- policy
    def policy_command_code(self, session: int, cc: int) -> None:
        self.send("PolicyCommandCode", lib.Esys_PolicyCommandCode(
            self.esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, cc))

    def policy_auth_value(self, session: int) -> None:
        self.send("PolicyAuthValue", lib.Esys_PolicyAuthValue(
            self.esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE))

    def policy_nv_written(self, session: int, written: bool) -> None:
        self.send("PolicyNvWritten", lib.Esys_PolicyNvWritten(
            self.esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, 1 if written else 0))

    def policy_digest(self, session: int) -> bytes:
        """PolicyGetDigest of a policy or trial session."""
        digest_pp = ffi.new("TPM2B_DIGEST **")
        self.send("PolicyGetDigest", lib.Esys_PolicyGetDigest(
            self.esys, session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, digest_pp))
        try:
            return bytes(ffi.buffer(digest_pp[0].buffer, digest_pp[0].size))
        finally:
            lib.Esys_Free(digest_pp[0])

    # ---- NV
    def nv_read_public(self, nv: int) -> NvPublic:
        """NV_ReadPublic of the index behind ESYS_TR `nv`."""
        pub_pp = ffi.new("TPM2B_NV_PUBLIC **")
        name_pp = ffi.new("TPM2B_NAME **")
        self.send("NV_ReadPublic", lib.Esys_NV_ReadPublic(
            self.esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, pub_pp, name_pp))
        try:
            p = pub_pp[0].nvPublic
            return NvPublic(
                handle=p.nvIndex, name_alg=p.nameAlg, attributes=p.attributes,
                auth_policy=bytes(ffi.buffer(p.authPolicy.buffer, p.authPolicy.size)),
                data_size=p.dataSize,
            )
        finally:
            lib.Esys_Free(pub_pp[0])
            lib.Esys_Free(name_pp[0])

    def nv_define_space(self, public: NvPublic, auth: bytes, session: int = ESYS_TR_PASSWORD) -> int:
        """NV_DefineSpace as owner; returns the new index's ESYS_TR (auth already set)."""
        info = ffi.new("TPM2B_NV_PUBLIC *")
        info.nvPublic.nvIndex = public.handle
        info.nvPublic.nameAlg = public.name_alg
        info.nvPublic.attributes = public.attributes
        fill_tpm2b(info.nvPublic.authPolicy, public.auth_policy)
        info.nvPublic.dataSize = public.data_size
        value = ffi.new("TPM2B_AUTH *")
        fill_tpm2b(value, auth)
        nv = ffi.new("ESYS_TR *")
        try:
            self.send("NV_DefineSpace", lib.Esys_NV_DefineSpace(
                self.esys, ESYS_TR_RH_OWNER, session, ESYS_TR_NONE, ESYS_TR_NONE, value, info, nv))
        finally:
            wipe_tpm2b(value)
        return nv[0]

    def nv_undefine_space(self, nv: int) -> None:
        """Owner NV_UndefineSpace; ESYS forgets `nv` on success."""
        self.send("NV_UndefineSpace", lib.Esys_NV_UndefineSpace(
            self.esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE))

    def nv_write(self, auth_handle: int, nv: int, data: bytes, session: int, offset: int = 0) -> None:
        """NV_Write `data` at `offset`, authorised by `session` on `auth_handle`."""
        buf = ffi.new("TPM2B_MAX_NV_BUFFER *")
        fill_tpm2b(buf, data)
        self.send("NV_Write", lib.Esys_NV_Write(
            self.esys, auth_handle, nv, session, ESYS_TR_NONE, ESYS_TR_NONE, buf, offset))
