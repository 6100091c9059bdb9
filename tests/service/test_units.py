"""systemd/pinutild.{socket,service}: the hardening stays (systemd-analyze's offline
exposure score must not get worse than measured, 0.7 "SAFE"), the socket is where
the policy's default `service_socket` points, and the service runs what `make
install` installs. (Not run under systemd here: this machine has no systemd as PID 1.)"""
from __future__ import annotations

import configparser
import os
import subprocess

from pinutil.pin.policy import Policy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNITS = os.path.join(ROOT, "systemd")
EXPOSURE_AT_MOST = 7  # systemd-analyze's threshold scale: 7 = exposure 0.7


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(UNITS, name))
    return parser


def test_exposure_score_of_the_service():
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           f"--threshold={EXPOSURE_AT_MOST}", "pinutild.service"],
                          cwd=UNITS, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Overall exposure level for pinutild.service: 0.7 SAFE" in done.stdout


def test_the_socket_is_the_policys_default():
    assert unit("pinutild.socket")["Socket"]["ListenStream"] == \
        Policy._DEFAULTS["service_socket"]


def test_the_service_runs_what_make_install_installs():
    service = unit("pinutild.service")["Service"]
    command = service["ExecStart"].split()[0]
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        makefile = f.read()
    assert command == "/usr/sbin/pinutild"
    assert "$(DESTDIR)$(SBINDIR)/pinutild" in makefile and "SBINDIR     := $(PREFIX)/sbin" in makefile
    for key, value in (("User", "pinutild"), ("NoNewPrivileges", "yes"),
                       ("PrivateNetwork", "yes"), ("RestrictAddressFamilies", "AF_UNIX"),
                       ("DeviceAllow", "/dev/tpmrm0 rw"), ("ProtectSystem", "strict"),
                       ("DevicePolicy", "closed"), ("CapabilityBoundingSet", "")):
        assert service[key] == value, key
