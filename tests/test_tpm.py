"""pinutil.tpm.context against a real swtpm per test (no mocks)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from pinutil.tpm._tss import ffi, lib

from pinutil import errors
from pinutil.tpm.context import Tpm
from pinutil.tpm.handles import EsysTr, TpmHandle
from pinutil.tpm.rc import TpmCommandError, is_transport_error, normalize_rc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def tpm(swtpm):
    with Tpm(swtpm.tcti) as t:
        yield t


# ---- return codes ---------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    (0x9A2, lib.TPM2_RC_BAD_AUTH),        # session 1
    (0x0A2, lib.TPM2_RC_BAD_AUTH),
    (0x18B, lib.TPM2_RC_HANDLE),          # handle 1
    (0x2C2, lib.TPM2_RC_ATTRIBUTES),      # parameter 2
    (0x2D5, lib.TPM2_RC_SIZE),
    (0x99D, lib.TPM2_RC_POLICY_FAIL),
    (0x12F, lib.TPM2_RC_AUTH_UNAVAILABLE),  # format 0: unchanged
    (0x921, lib.TPM2_RC_LOCKOUT),          # warning: unchanged
    (0xA000A, 0xA000A),                   # TCTI layer: unchanged
])
def test_normalize_rc(raw, expected):
    assert normalize_rc(raw) == expected


def test_transport_errors_are_told_from_tpm_errors():
    assert is_transport_error(lib.TSS2_TCTI_RC_IO_ERROR)
    assert is_transport_error(0x7000A)  # ESAPI IO error
    assert not is_transport_error(0x9A2)
    assert not is_transport_error(0x12F)


def test_tpm_command_error_carries_normalised_code_and_is_fail_closed():
    e = TpmCommandError("NV_Read", 0x9A2)
    assert e.code == lib.TPM2_RC_BAD_AUTH and e.rc == 0x9A2
    assert isinstance(e, errors.TpmUnavailable)


# ---- life cycle -------------------------------------------------------------------
def test_close_is_deterministic_and_idempotent(swtpm):
    t = Tpm(swtpm.tcti)
    assert t.get_command_supported(lib.TPM2_CC_NV_Read)
    t.close()
    t.close()
    with pytest.raises(errors.TpmUnavailable):
        t.get_command_supported(lib.TPM2_CC_NV_Read)


def test_context_manager_closes(swtpm):
    with Tpm(swtpm.tcti) as t:
        pass
    with pytest.raises(errors.TpmUnavailable):
        _ = t.esys


def test_absent_tpm_is_unavailable_fast():
    start = time.monotonic()
    with pytest.raises(errors.TpmUnavailable) as info:
        Tpm("swtpm:path=/tmp/pypam-no-such-tpm/sock")
    assert time.monotonic() - start < 1.0
    assert not isinstance(info.value, TpmCommandError)


def test_unknown_tcti_is_unavailable():
    with pytest.raises(errors.TpmUnavailable):
        Tpm("no-such-tcti-module:x")


def test_killed_tpm_is_unavailable_and_works_after_restart(swtpm):
    with Tpm(swtpm.tcti) as t:
        swtpm.kill()
        with pytest.raises(errors.TpmUnavailable) as info:
            t.get_command_supported(lib.TPM2_CC_NV_Read)
        assert not isinstance(info.value, TpmCommandError)
    swtpm.start()
    with Tpm(swtpm.tcti) as t:
        assert t.get_command_supported(lib.TPM2_CC_NV_Read)


# ---- capabilities, keys and sessions ---------------------------------------------
def test_get_command_supported(tpm):
    assert tpm.get_command_supported(lib.TPM2_CC_PolicyNvWritten) is True
    assert tpm.get_command_supported(0x1FF) is False  # not a TPM 2.0 command code


def test_storage_primary_template(tpm, swtpm):
    primary = tpm.storage_primary()
    try:
        pub = ffi.new("TPM2B_PUBLIC **")
        name = ffi.new("TPM2B_NAME **")
        qname = ffi.new("TPM2B_NAME **")
        rc = lib.Esys_ReadPublic(tpm.esys, primary, lib.ESYS_TR_NONE, lib.ESYS_TR_NONE,
                                 lib.ESYS_TR_NONE, pub, name, qname)
        assert rc == 0
        area = pub[0].publicArea
        assert area.type == lib.TPM2_ALG_ECC
        assert area.nameAlg == lib.TPM2_ALG_SHA256
        assert area.parameters.eccDetail.curveID == lib.TPM2_ECC_NIST_P256
        assert area.parameters.eccDetail.symmetric.algorithm == lib.TPM2_ALG_AES
        attrs = area.objectAttributes
        for bit in ("FIXEDTPM", "FIXEDPARENT", "SENSITIVEDATAORIGIN", "USERWITHAUTH", "NODA",
                    "RESTRICTED", "DECRYPT"):
            assert attrs & getattr(lib, "TPMA_OBJECT_" + bit), bit
        assert not attrs & lib.TPMA_OBJECT_SIGN_ENCRYPT
        for p in (pub, name, qname):
            lib.Esys_Free(p[0])
    finally:
        tpm.flush(primary)
    assert swtpm.tools("tpm2_getcap", "handles-transient").stdout.strip() == b""


def test_salted_session_is_created_and_flushed(tpm, swtpm):
    primary = tpm.storage_primary()
    session = tpm.salted_session(primary)
    tpm.flush(primary)
    assert swtpm.tools("tpm2_getcap", "handles-loaded-session").stdout.strip() != b""
    tpm.flush(session)
    assert swtpm.tools("tpm2_getcap", "handles-loaded-session").stdout.strip() == b""


def test_flush_of_unknown_handle_is_a_tpm_error(tpm):
    with pytest.raises(errors.TpmUnavailable):
        tpm.flush(EsysTr(0x12345))  # not an ESYS_TR ESYS knows


def _loaded(swtpm) -> bytes:
    return b"".join(swtpm.tools("tpm2_getcap", kind).stdout.strip()
                    for kind in ("handles-transient", "handles-loaded-session"))


@pytest.mark.parametrize("quietly", [False, True])
def test_flush_refuses_a_handle_of_unknown_kind(tpm, swtpm, quietly):
    """An ESYS_TR flushed as a TPM handle (or the reverse) flushes nothing: a bare int
    is refused, even by the clean-up path that swallows TPM errors."""
    key = tpm.create_storage_primary()[0]
    flush = tpm.flush_quietly if quietly else tpm.flush
    with pytest.raises(TypeError):
        flush(int(key))
    assert _loaded(swtpm) != b""
    flush(key)
    assert _loaded(swtpm) == b""


def test_both_kinds_of_handle_flush_through_one_method(tpm, swtpm):
    primary = tpm.storage_primary()
    assert type(primary) is EsysTr
    raw = tpm.tpm_handle(primary)
    assert type(raw) is TpmHandle and raw >> 24 == 0x80  # a transient object
    session = tpm.salted_session(primary)
    tpm.flush_quietly(raw)  # by its TPM handle (SAPI)
    tpm.flush(session)      # by its ESYS_TR (ESAPI)
    assert _loaded(swtpm) == b""
    tpm.flush_quietly(raw)  # already gone: quiet


# ---- environment: libtss2 must not log to a caller-chosen file --------------------
_LOG_PROBE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from pinutil import errors
    if sys.argv[1] == "ours":
        from pinutil.tpm.context import Tpm
        try:
            Tpm("swtpm:path=/tmp/pypam-no-such-tpm/sock")
        except errors.TpmUnavailable:
            pass
    else:  # the raw library, as a control that the variables are honoured at all
        from pinutil.tpm._tss import ffi, lib
        lib.Tss2_TctiLdr_Initialize(b"swtpm:path=/tmp/pypam-no-such-tpm/sock",
                                    ffi.new("TSS2_TCTI_CONTEXT **"))
""")


@pytest.mark.parametrize("mode, logs", [("raw", True), ("ours", False)])
def test_tss2_log_variables_are_neutralised(tmp_path, mode, logs):
    logfile = tmp_path / "tss.log"
    env = dict(os.environ, TSS2_LOG="all+trace", TSS2_LOGFILE=str(logfile))
    proc = subprocess.run(
        [sys.executable, "-c", _LOG_PROBE.format(root=ROOT), mode],
        env=env, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    assert logfile.exists() is logs
    assert proc.stderr == b""


# ---- a hung TPM ------------------------------------------------------------------
def test_paused_tpm_blocks_despite_timeout_and_completes_after_resume(swtpm):
    """Documents tpm2-tss 3.2.1: Esys_SetTimeout does not bound a synchronous call,
    and tcti-swtpm ignores timeouts. The call blocks until the TPM answers; the bound
    must come from the caller (a helper process with a deadline). If a later tpm2-tss
    makes the call fail within the timeout, this test fails: then switch the check
    path to rely on it."""
    result: list[object] = []
    with Tpm(swtpm.tcti, timeout_ms=200) as t:
        swtpm.pause()
        try:
            worker = threading.Thread(
                target=lambda: result.append(_capture(t.get_command_supported, lib.TPM2_CC_NV_Read)),
                daemon=True)
            worker.start()
            worker.join(1.5)
            assert worker.is_alive(), f"call returned while the TPM was paused: {result}"
        finally:
            swtpm.resume()
        worker.join(10)
        assert not worker.is_alive()
    assert result == [True]


def _capture(fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - reported to the test thread
        return e


# ---- one way to the TPM -----------------------------------------------------------
def _pinutil_sources():
    for folder, _, files in os.walk(os.path.join(ROOT, "pinutil")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path) as f:
                    yield os.path.relpath(path, ROOT), f.read()


def test_tpm_commands_are_sent_only_by_the_tpm_layer():
    """Outside pinutil/tpm nothing calls ESAPI or SAPI itself: every command goes
    through a `Tpm` method or a `sapi` function, and so through `Tpm.send` (one error
    translation, one command count). The master key once bypassed it."""
    raw_call = re.compile(r"\blib\.(Esys_|Tss2_Sys_)\w+\(")
    offenders = [path for path, text in _pinutil_sources()
                 if not path.startswith("pinutil/tpm/") and raw_call.search(text)]
    assert offenders == []


def test_return_codes_are_never_copied_by_hand():
    """RC numbers come from the binding (lib.TPM2_RC_*, declared in binding_build.py);
    a hand-copied table once sat beside it, kept honest only by a test."""
    copied = re.compile(r"^\s*_?(\w+_)?RC(_\w+)?\s*=\s*0x[0-9a-fA-F]+", re.MULTILINE)
    offenders = [path for path, text in _pinutil_sources() if copied.search(text)]
    assert offenders == []
