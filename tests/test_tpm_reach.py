"""Root's `pinutil status` warns when someone besides root and pinutild can reach the
TPM (review F1): a TPM device node open to another account or group (Debian's
tpm-udev gives the raw /dev/tpm0 to tss), or tpm2-abrmd's D-Bus policy letting
the group tss send it TPM commands. Device nodes are stand-ins (the numbers of
/dev/null, never opened) in temporary directories: in the namespace of the
syslog capture, which is mounted over /dev there, for the real `pinutil status`.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess

import pytest

from pinutil.cli import tpm_reach
from pinutil.pin import state
from tests.support.pin_env import PINUTIL

SERVICE = "daemon"  # stands in for pinutild in the unit tests (as tests/test_state_dir.py)
SERVICE_UID = 4343   # the account `pinutild` made in the namespace for the real run
# Debian 12's /etc/dbus-1/system.d/tpm2-abrmd.conf, shortened to what matters.
TABRMD_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="tss"><allow own="com.intel.tss2.Tabrmd"/></policy>
  <policy user="root"><allow send_destination="com.intel.tss2.Tabrmd"/></policy>
  <policy user="tss"><allow send_destination="com.intel.tss2.Tabrmd"/></policy>
  <policy group="tss">
    <allow send_destination="com.intel.tss2.Tabrmd"/>
    <allow receive_sender="com.intel.tss2.Tabrmd"/>
  </policy>
</busconfig>
"""
OTHER_POLICY = """<busconfig><policy group="tss"><allow send_destination="org.example.X"/>
</policy></busconfig>
"""


def node(directory: str, name: str, owner: str, group: str, mode: int) -> None:
    path = os.path.join(directory, name)
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(path, pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid)
    os.chmod(path, mode)


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def as_service(monkeypatch):
    monkeypatch.setattr(state, "SERVICE_USER", SERVICE)


def test_the_raw_device_and_tabrmd_are_reported_with_the_service(tmp_path, as_service):
    dev, bus = tmp_path / "dev", tmp_path / "bus"
    dev.mkdir()
    bus.mkdir()
    node(str(dev), "tpm0", "tss", "tss", 0o660)          # Debian's tpm-udev
    node(str(dev), "tpmrm0", "root", SERVICE, 0o660)     # ours
    write(str(bus / "tpm2-abrmd.conf"), TABRMD_POLICY)
    write(str(bus / "other.conf"), OTHER_POLICY)
    assert tpm_reach.warnings(str(dev), (str(bus),)) == [
        f"{dev}/tpm0 (tss:tss 0660) is open to user tss and group tss, past pinutild",
        (f"tpm2-abrmd's D-Bus policy {bus}/tpm2-abrmd.conf lets user tss and group tss "
         "send TPM commands past pinutild (when tpm2-abrmd runs; `systemctl mask "
         "tpm2-abrmd` or remove the package)")]


def test_root_only_devices_and_no_tabrmd_are_not_reported(tmp_path, as_service):
    dev = tmp_path / "dev"
    dev.mkdir()
    node(str(dev), "tpm0", "root", "root", 0o600)
    node(str(dev), "tpmrm0", "root", SERVICE, 0o660)
    write(str(dev / "tpm1"), "")  # not a device: not a TPM
    assert tpm_reach.warnings(str(dev), (str(tmp_path / "none"),)) == []
    os.chmod(dev / "tpmrm0", 0o666)
    assert tpm_reach.warnings(str(dev), ()) == [
        f"{dev}/tpmrm0 (root:{SERVICE} 0666) is open to everyone, past pinutild"]


def test_without_the_service_tss_is_the_expected_group(tmp_path, monkeypatch):
    """The set-gid fallback gives the TPM to tss on purpose (README)."""
    monkeypatch.setattr(state, "SERVICE_USER", "no-such-account-pypam")
    dev, bus = tmp_path / "dev", tmp_path / "bus"
    dev.mkdir()
    bus.mkdir()
    node(str(dev), "tpm0", "tss", "tss", 0o660)
    node(str(dev), "tpmrm0", "root", "tss", 0o660)
    write(str(bus / "tpm2-abrmd.conf"), TABRMD_POLICY)
    assert tpm_reach.warnings(str(dev), (str(bus),)) == []
    node(str(dev), "tpm1", "root", "daemon", 0o660)
    assert tpm_reach.warnings(str(dev), (str(bus),)) == [
        f"{dev}/tpm1 (root:daemon 0660) is open to group daemon, past pinutild"]


# In the namespace: the test's D-Bus policy directory bound over the system's first
# one, an empty one over the others (those that exist), then pinutil.
_BIND_BUS = ('set -e; bus=$1; empty=$2; shift 2; for d in ' +
             " ".join(tpm_reach.DBUS_POLICY_DIRS) + '; do if [ -d "$d" ]; then '
             'mount --bind "$bus" "$d"; fi; bus=$empty; done; exec "$@"')


def root_status(pin_env, accounts, bus: str, *options: str) -> str:
    empty = os.path.join(os.path.dirname(bus), "empty")
    os.makedirs(empty, exist_ok=True)
    done = subprocess.run([*accounts.prefix(), "sh", "-c", _BIND_BUS, "sh", bus, empty,
                           PINUTIL, "--policy", pin_env.policy, *options, "status", "root"],
                          capture_output=True, timeout=60, check=False, env={}, cwd="/")
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def test_root_s_pinutil_status_warns_of_the_ways_past_pinutild(
        pin_env, accounts, syslog_capture, tmp_path):
    """The installed shape (an account `pinutild`), the real `pinutil status` as root:
    /dev (the capture's directory, in the namespace) with Debian's tss-owned /dev/tpm0
    and tpm2-abrmd's policy: both named; our devices only and no policy: nothing."""
    accounts.add_user("pinutild", SERVICE_UID, "not used")
    bus = tmp_path / "bus"
    bus.mkdir()
    os.chmod(tmp_path, 0o755)
    node(syslog_capture.root, "tpm0", "tss", "tss", 0o660)
    tpmrm = os.path.join(syslog_capture.root, "tpmrm0")
    os.mknod(tpmrm, 0o660 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(tpmrm, 0, SERVICE_UID)  # root:pinutild, as udev/60-pypam-tpm.rules says
    write(str(bus / "tpm2-abrmd.conf"), TABRMD_POLICY)
    try:
        status = json.loads(root_status(pin_env, accounts, str(bus), "--json"))
        assert status["tpm_reachable_past_pinutild"] == [
            "/dev/tpm0 (tss:tss 0660) is open to user tss and group tss, past pinutild",
            (f"tpm2-abrmd's D-Bus policy {tpm_reach.DBUS_POLICY_DIRS[0]}/tpm2-abrmd.conf "
             "lets user tss and group tss send TPM commands past pinutild (when tpm2-abrmd "
             "runs; `systemctl mask tpm2-abrmd` or remove the package)")]
        assert "; WARNING: /dev/tpm0 (tss:tss 0660)" in root_status(pin_env, accounts, str(bus))

        os.chown(os.path.join(syslog_capture.root, "tpm0"), 0, 0)
        os.chmod(os.path.join(syslog_capture.root, "tpm0"), 0o600)
        os.unlink(bus / "tpm2-abrmd.conf")
        status = json.loads(root_status(pin_env, accounts, str(bus), "--json"))
        assert status["tpm_reachable_past_pinutild"] == []
        assert "WARNING" not in root_status(pin_env, accounts, str(bus))
    finally:
        for name in ("tpm0", "tpmrm0"):
            os.unlink(os.path.join(syslog_capture.root, name))
