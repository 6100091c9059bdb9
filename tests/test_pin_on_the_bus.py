"""Checklist 20: the PIN on the TPM bus.

tpm2-tss's pcap TCTI records every byte between the client and the TPM, as a bus
sniffer would. With the default salted session the PIN must not appear in the
capture; a plain password session is the control: there the PIN is in clear, so the
capture demonstrably sees the traffic the assertion is about.
"""
import os
import subprocess
import sys
import tempfile

import pytest

from pinutil.pin.index import PinIndex
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIN = b"73914682"
HANDLE = 0x01000000 + 4242

_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
from pinutil.tpm import sapi
from pinutil.pin.index import PinIndex
from pinutil.tpm.context import Tpm
with Tpm("pcap:" + sys.argv[2]) as tpm:
    name = sapi.salt_key_name(tpm, persist=False)
    PinIndex(tpm, int(sys.argv[3]), name).check(sys.argv[4].encode(), salted=sys.argv[5] == "salted")
"""


def _captured_check(tcti: str, session: str) -> bytes:
    """Run one correct PIN check through the pcap TCTI; return the capture's bytes."""
    with tempfile.TemporaryDirectory(prefix="pypam-pcap-", dir="/tmp") as work:
        pcap = os.path.join(work, "bus.pcap")
        done = subprocess.run(
            [sys.executable, "-I", "-c", _CHECK, ROOT, tcti, str(HANDLE), PIN.decode(), session],
            env={"PATH": "/usr/bin:/bin", "TCTI_PCAP_FILE": pcap},
            capture_output=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr.decode()
        with open(pcap, "rb") as f:
            capture = f.read()
    assert len(capture) > 200, "the pcap TCTI recorded nothing"
    return capture


@pytest.fixture
def enrolled(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        PinIndex(tpm, HANDLE, sapi.salt_key_name(tpm, persist=False)).define(PIN, 5)
    return swtpm


def test_salted_check_keeps_the_pin_off_the_bus(enrolled):
    capture = _captured_check(enrolled.tcti, "salted")
    assert PIN not in capture
    assert enrolled.read_pin_counter(HANDLE) == (0, 5)  # the check really succeeded


def test_plain_check_puts_the_pin_on_the_bus_control(enrolled):
    capture = _captured_check(enrolled.tcti, "plain")
    assert PIN in capture
