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

import os
import subprocess
import sys
import threading

import pytest

from pinutil import errors
from pinutil.pin.index import PinIndex
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm
from tests.support.pamhost import PAM_AUTHINFO_UNAVAIL, result_code
from tests.support.tpm_proxy import (
    CC_CREATE_PRIMARY,
    CC_NV_READ,
    CC_START_AUTH_SESSION,
    TpmProxy,
    command_code,
    parse_command,
)

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
        name = sapi.salt_key_name(tpm, persist=False)
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
            sapi.persist_salt_key(tpm)

        def withheld(tpm, auth_handle, handle, size, auths):
            raise errors.TpmUnavailable("the answer never came")

        monkeypatch.setattr(sapi, "_nv_read", withheld)
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


# ---- killed runs: what no client can clean up --------------------------------------------------
_CHECK_TO_BE_KILLED = """
import sys
sys.path.insert(0, sys.argv[1])
from pinutil.pin.index import PinIndex
from pinutil.tpm.context import Tpm
with Tpm(sys.argv[2]) as tpm:
    PinIndex(tpm, int(sys.argv[3]), bytes.fromhex(sys.argv[4])).check(sys.argv[5].encode())
"""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_POINTS = {
    # the command after whose answer (never delivered) the client dies, the PIN typed
    "session-created": (CC_START_AUTH_SESSION, "2580"),
    "transient-key-created": (CC_CREATE_PRIMARY, "2580"),
}


class KillPoint:
    """Proxy intercept: at the chosen command, let the TPM answer it and hold the answer
    until the test has killed the client, which therefore never learns it."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, command: bytes, forward) -> bytes | None:
        code = command_code(command)
        is_pin_read = code != CC_NV_READ or parse_command(command, 2)[0][0] == HANDLE
        response = forward(command)
        if code == self.code and is_pin_read and not self.reached.is_set():
            self.reached.set()
            self.release.wait(30)
        return response


def _left_in_tpm(swtpm) -> list[bytes]:
    return [out for out in (swtpm.tools("tpm2_getcap", kind).stdout.strip() for kind in (
        "handles-transient", "handles-loaded-session", "handles-saved-session")) if out]


def _kill_mid_check(swtpm, name: bytes, point: str) -> list[bytes]:
    code, typed = KILL_POINTS[point]
    kill_point = KillPoint(code)
    proxy = TpmProxy(swtpm.sock, os.path.join(swtpm.state_dir, "px"), kill_point).start()
    try:
        client = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHECK_TO_BE_KILLED, ROOT, proxy.tcti, str(HANDLE),
             name.hex(), typed], env={"PATH": "/usr/bin"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert kill_point.reached.wait(30), "the check never got to the kill point"
        client.kill()
        client.wait()
        kill_point.release.set()
        return _left_in_tpm(swtpm)
    finally:
        kill_point.release.set()
        proxy.stop()


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_killed_check_leaves_its_handle_without_a_resource_manager(enrolled, point):
    """SIGKILL (the helper backend's and the forked child's timeout) at the worst
    moments, when the TPM has made a session or key whose handle the client never
    learns: without a resource manager (what `device:/dev/tpm0` would do) it stays
    loaded, which is why such transports are refused; the kernel's /dev/tpmrm0 flushes
    it when the connection closes. The PIN in flight counts at most once."""
    swtpm, name = enrolled
    if point != "transient-key-created":
        with Tpm(swtpm.tcti) as tpm:
            sapi.persist_salt_key(tpm)
    assert _kill_mid_check(swtpm, name, point) != []
    assert swtpm.read_pin_counter(HANDLE)[0] <= 1  # at most the one PIN in flight
