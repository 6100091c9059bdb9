"""Issue 9, finding 10: no transport without a resource manager, nothing left loaded.

`device:/dev/tpm0` talks to the TPM without the kernel's resource manager: the
sessions and transient objects of every process share the TPM's few slots, and
whatever a killed process had loaded stays there until every user's check fails
(TPM_RC_SESSION_MEMORY / OBJECT_MEMORY). `Tpm()` refuses it (and a bare `device`,
whose default is /dev/tpm0) before opening anything; /dev/tpmrm0 is the transport.

And what we load ourselves is flushed on every error path: the checks below leave a
salted PIN check failing in each way it can fail after a session or a transient salt
key exists, and look at the TPM's handle lists out of band (tpm2_getcap). The fault
sweep (test_tpm_faults.py) does the same after every injected transport fault.
"""
from __future__ import annotations

import pytest

from pinutil import errors, tpm_sys
from pinutil.pin_index import PinIndex
from pinutil.tpm import Tpm
from tests.support.pamhost import PAM_AUTHINFO_UNAVAIL, result_code

HANDLE = 0x01000000
PIN = b"2580"
WRONG = b"1111"


@pytest.mark.parametrize("tcti", ["device:/dev/tpm0", "device:/dev/tpm1", "device",
                                  "device:"])
def test_a_transport_without_resource_manager_is_refused(tcti):
    with pytest.raises(errors.TpmUnavailable, match="resource manager") as info:
        Tpm(tcti)
    assert "tpmrm0" in str(info.value)


@pytest.mark.parametrize("tcti", ["device:/dev/tpmrm0", "device:/dev/tpmrm1"])
def test_the_resource_manager_device_is_not_refused_for_that(tcti):
    """Here there is no TPM device: it fails to open, but not for the reason above."""
    with pytest.raises(errors.TpmUnavailable) as info:
        Tpm(tcti)
    assert "resource manager" not in str(info.value)


def test_the_pam_module_refuses_it_and_says_why(pin_env, syslog_capture):
    pin_env.enrol("root", PIN.decode())
    pin_env.write_policy(tcti="device:/dev/tpm0")
    service = pin_env.service("pin", pin_env.tpm_pin_line(backend="direct"))
    report = syslog_capture.run_pam(pin_env.pamd, service, user="root", answers=["2580"])
    assert result_code(report, "auth") == PAM_AUTHINFO_UNAVAIL
    assert any("resource manager" in m for m in syslog_capture.messages())


# ---- flushing on error paths -------------------------------------------------------------------
def _loaded(swtpm) -> list[bytes]:
    return [swtpm.tools("tpm2_getcap", kind).stdout.strip()
            for kind in ("handles-transient", "handles-loaded-session")]


@pytest.fixture
def enrolled(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        name = tpm_sys.salt_key_name(tpm, persist=False)
        PinIndex(tpm, HANDLE, name).define(PIN, 5)
    return swtpm, name


@pytest.mark.parametrize("persistent", [True, False])
def test_a_refused_answer_leaves_no_session(enrolled, monkeypatch, persistent):
    """The TPM accepted the PIN, the answer is refused (altered on the way): before,
    the session stayed loaded (the TPM had flushed it... only if it saw the command;
    here it never does) - now it is flushed."""
    swtpm, name = enrolled
    with Tpm(swtpm.tcti) as tpm:
        if persistent:
            tpm_sys.persist_salt_key(tpm)

        def withheld(tpm, auth_handle, handle, size, auths):
            raise errors.TpmUnavailable("the answer never came")

        monkeypatch.setattr(tpm_sys, "_nv_read", withheld)
        with pytest.raises(errors.TpmUnavailable):
            PinIndex(tpm, HANDLE, name).check(PIN)
    assert _loaded(swtpm) == [b"", b""]
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


def test_a_mismatched_salt_key_leaves_no_transient_key(enrolled):
    swtpm, _ = enrolled
    with Tpm(swtpm.tcti) as tpm, pytest.raises(errors.TpmUnavailable, match="salt key"):
        PinIndex(tpm, HANDLE, b"\x00\x0b" + bytes(32)).check(PIN)
    assert _loaded(swtpm) == [b"", b""]


def test_a_wrong_pin_and_a_locked_pin_leave_nothing(enrolled):
    swtpm, name = enrolled
    with Tpm(swtpm.tcti) as tpm:
        index = PinIndex(tpm, HANDLE, name)
        for _ in range(5):
            with pytest.raises(errors.WrongPin):
                index.check(WRONG)
        with pytest.raises(errors.PinLocked):
            index.check(PIN)
    assert _loaded(swtpm) == [b"", b""]


def test_a_failed_enrolment_leaves_nothing(enrolled):
    swtpm, name = enrolled
    with Tpm(swtpm.tcti) as tpm:
        with pytest.raises(errors.AlreadyEnrolled):
            PinIndex(tpm, HANDLE, name).define(PIN, 5)
        with pytest.raises(errors.TpmUnavailable, match="salt key"):
            PinIndex(tpm, HANDLE + 1, b"\x00\x0b" + bytes(32)).define(PIN, 5)
    assert _loaded(swtpm) == [b"", b""]
    assert HANDLE + 1 not in swtpm.nv_handles()
