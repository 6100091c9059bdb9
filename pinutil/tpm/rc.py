"""TPM and TSS return codes: how a failed command becomes an exception.

Every command the TPM layer sends ends in `check_rc` (through `Tpm.send`): TPM-reported
failures raise `TpmCommandError`, carrying the raw and the normalised return code, so
callers branch on the binding's constants (`lib.TPM2_RC_BAD_AUTH`), never on message
text. Transport failures (no socket, IO error, a malformed answer) raise
`errors.TpmUnavailable`. `TpmCommandError` is itself a `TpmUnavailable` ("the TPM
failed"): a TPM error that a caller did not expect and did not translate still fails
closed as "TPM unavailable" instead of leaking out as something else.

The numbers come from the tpm2-tss headers through the binding (binding_build.py
declares them): no return code is copied by hand in pinutil.
"""
from __future__ import annotations

from pinutil import errors
from pinutil.tpm._tss import ffi, lib

_FORMAT_1_NUMBER = lib.TPM2_RC_P | lib.TPM2_RC_N_MASK  # which parameter/handle/session
_RESMGR_LAYERS = (lib.TSS2_RESMGR_RC_LAYER, lib.TSS2_RESMGR_TPM_RC_LAYER)
# TSS base codes that mean "the TPM could not be talked to" in any TSS layer.
_TRANSPORT_BASE_RCS = frozenset({
    lib.TSS2_BASE_RC_GENERAL_FAILURE, lib.TSS2_BASE_RC_NO_CONNECTION,
    lib.TSS2_BASE_RC_TRY_AGAIN, lib.TSS2_BASE_RC_IO_ERROR,
    lib.TSS2_BASE_RC_MALFORMED_RESPONSE, lib.TSS2_BASE_RC_INSUFFICIENT_RESPONSE,
})


def is_tss_layer(rc: int) -> bool:
    """True when the TSS (TCTI, SAPI, ESAPI, ...), not the TPM, returned `rc`."""
    return bool(rc & lib.TSS2_RC_LAYER_MASK)


def normalize_rc(rc: int) -> int:
    """TPM return code without the handle/parameter/session number of format-1 codes.

    0x9a2 (BAD_AUTH on session 1) -> 0x0a2 == lib.TPM2_RC_BAD_AUTH. TSS-layer codes
    (TCTI, ESAPI, ...) and format-0 codes are returned unchanged.
    """
    if is_tss_layer(rc) or not rc & lib.TPM2_RC_FMT1:
        return rc
    return rc & ~_FORMAT_1_NUMBER


def is_transport_error(rc: int) -> bool:
    """True when `rc` says the TPM was not reached or its answer was unusable."""
    layer = rc & lib.TSS2_RC_LAYER_MASK
    if layer == 0:
        return False
    if layer == lib.TSS2_TCTI_RC_LAYER or layer in _RESMGR_LAYERS:
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
