"""systemd/pinutil-proof.{socket,@.service}: the root password proof's units. Its
hardening keeps systemd-analyze's offline exposure score at 0.9 "SAFE" (pinutild's
own unit has 0.7; the proof must stay root, which costs 0.4 of it, and keep
CAP_DAC_READ_SEARCH to read a mode-0000 /etc/shadow, 0.2: review F13; that it works
is tests/service/test_enrol_proof_process.py's), only the
service's account may connect, pinutild's unit names that socket, and `make install`
installs what the units run. (Not run under systemd here: no systemd as PID 1.)"""
from __future__ import annotations

import os
import shutil
import subprocess

from tests.service.test_units import ROOT, UNITS, unit


def test_exposure_score_of_the_proof_service(tmp_path):
    shutil.copy(os.path.join(UNITS, "pinutil-proof@.service"), tmp_path / "pinutil-proof@1.service")
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=9",
                           "pinutil-proof@1.service"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Overall exposure level for pinutil-proof@1.service: 0.9 SAFE" in done.stdout


def test_only_the_service_account_may_connect():
    socket = unit("pinutil-proof.socket")["Socket"]
    assert (socket["SocketUser"], socket["SocketMode"], socket["Accept"]) == \
        ("pinutild", "0600", "yes")
    command = unit("pinutild.service")["Service"]["ExecStart"].split()
    assert command[command.index("--proof") + 1] == socket["ListenStream"]


def test_the_proof_runs_what_make_install_installs():
    service = unit("pinutil-proof@.service")["Service"]
    assert service["ExecStart"] == "/usr/sbin/pinutil-proof"
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    assert "$(DESTDIR)$(SBINDIR)/pinutil-proof" in makefile
    assert "systemd/pinutil-proof.socket systemd/pinutil-proof@.service" in makefile
    for key, value in (("NoNewPrivileges", "yes"), ("PrivateNetwork", "yes"),
                       ("CapabilityBoundingSet", "CAP_DAC_READ_SEARCH"),
                       ("AmbientCapabilities", ""), ("ProtectSystem", "strict"),
                       ("PrivateDevices", "yes"), ("RestrictAddressFamilies", "AF_UNIX")):
        assert service[key] == value, key
