"""pinutild's units under a real systemd as PID 1: the packages installed into a booted
Debian 12 (tests/package/booted.py, systemd-nspawn --boot), the sockets enabled as an
administrator would, and then what the other tests can only read from the unit files
(tests/service/test_units.py: systemd-analyze --offline, systemd-socket-activate):

- installing starts and enables nothing, in a running system;
- pinutild.socket listens (0666 root) and pinutil-proof.socket (0600 pinutild); the
  first connection starts pinutild.service, as the user pinutild with no capability,
  NoNewPrivileges, a seccomp filter, a read-only system but for its state directory,
  no homes, and a device cgroup that opens /dev/tpmrm0 and nothing else;
- a user enrols their PIN with `pinutil setup` through the root password proof
  (pinutil-proof@.service: root with CAP_DAC_READ_SEARCH alone, on a read-only
  system); a wrong password enrols nothing;
- the service leaves when idle; a login through real libpam (pamtester,
  `backend=daemon`) starts it again and is decided by it: the wrong PIN fails;
- `systemd-analyze security` on the loaded units gives the scores the unit files
  have offline (documented, and pinned by tests/service).

The TPM: this kernel has no TPM driver (CONFIG_TCG_TPM unset) and no CUSE, so no TPM
character device can exist here; the service reaches a swtpm on this machine through
its socket inside the root (the policy's `tcti`). The device policy is checked with a
node at /dev/tpmrm0 (root:pinutild 0660, what udev/60-pypam-tpm.rules makes; no udev
runs in a container) whose major number has no driver: opening it fails with ENXIO
when the cgroup lets the open through to the driver, EPERM when it does not.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.package.booted import BootedRoot
from tests.package.debs import ROOT, dependencies
from tests.support.debian_root import DebianRoot
from tests.support.swtpm import start_swtpm

PIN, WRONG_PIN, PASSWORD = "2580", "1111", "pw-of-alice"
UNITS = ("pinutild.socket", "pinutild.service", "pinutil-proof.socket")
REINSTALL = "apt-get install -y -qq --reinstall /srv/debs/pypam-tpm-pin_*.deb"
# pinutild.service: --idle-exit 60. A bound, not a timing: only its passing is checked.
IDLE_EXIT_BOUND = 180
# Mounts a service must see read-only; what each unit may write is added to it.
READ_ONLY = ("/", "/etc", "/usr", "/var", "/var/lib", "/srv", "/run", "/run/lock",
             "/run/systemd")

# Run inside a service's mount namespace (nsenter -m), as root: for each path, "rw"
# when a file can be made there, else the error's name. Root, so that only the mount
# (EROFS), never file permissions, can refuse.
_WRITABLE_PROBE = """
import errno, json, os, sys
found = {}
for path in sys.argv[1:]:
    probe = os.path.join(path, ".pypam-pid1-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
        found[path] = "rw"
    except OSError as e:
        found[path] = errno.errorcode[e.errno]
print(json.dumps(found))
"""
# Run as pinutild inside pinutild.service's cgroup (its device policy) and mount
# namespace: how opening each device ends.
_DEVICE_PROBE = """
import errno, json, os, sys
found = {}
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        found[path] = "opened"
    except OSError as e:
        found[path] = errno.errorcode[e.errno]
print(json.dumps(found))
"""
_JOIN_CGROUP_AND_PROBE = """
set -e
pid=$(systemctl show -P MainPID pinutild.service)
echo $$ > /sys/fs/cgroup/system.slice/pinutild.service/cgroup.procs
exec nsenter -t "$pid" -m setpriv --reuid pinutild --regid pinutild --init-groups \\
    python3 -I /srv/pypam-probes/devices.py "$@"
"""


# The TPM device as udev/60-pypam-tpm.rules leaves it, and another device; $1 is a
# character major number without a driver.
MAKE_DEVICE_NODES = """
set -e
mknod -m 0660 /dev/tpmrm0 c "$1" 65536
mknod -m 0660 /dev/pypam-other c "$1" 65537
chown root:pinutild /dev/tpmrm0 /dev/pypam-other
"""


def _exposure(report: str, unit: str) -> str:
    """"0.7 SAFE" from systemd-analyze security's last line about `unit`."""
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\S+ \S+)", report)
    assert found, report[-2000:]
    return found.group(1)


def _offline_exposure(unit: str) -> str:
    """The score of this tree's unit file, read by the host's systemd-analyze."""
    source = unit.split("@")[0] + ("@.service" if "@" in unit else "")
    with tempfile.TemporaryDirectory() as directory:
        shutil.copy(os.path.join(ROOT, "systemd", source), os.path.join(directory, unit))
        done = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                              cwd=directory, capture_output=True, text=True, check=False)
    return _exposure(done.stdout, unit)


def _free_char_major() -> int:
    """A character major number no driver of this kernel has."""
    with open("/proc/devices") as f:
        text = f.read().split("Block devices:")[0]
    used = {int(line.split()[0]) for line in text.splitlines()[1:] if line.strip()}
    free = [major for major in range(254, 233, -1) if major not in used]
    assert free, f"no free character major in 234-254:\n{text}"
    return free[0]


@pytest.fixture(scope="module")
def booted(debs):
    """(BootedRoot, swtpm): the packages' dependencies, systemd, pamtester and the user
    alice installed; the packages themselves copied to /srv/debs, not installed."""
    with DebianRoot("bookworm") as root:
        root.run(["apt-get", "update", "-qq"])
        root.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd",
                  "systemd-sysv", "dbus", "pamtester", "passwd", "util-linux",
                  *dependencies(debs["new"])])
        root.run(["useradd", "-m", "alice"])
        root.run(["chpasswd"], input=f"alice:{PASSWORD}\n".encode())
        # A booted system has no policy-rc.d (DebianRoot's keeps chrooted scripts from
        # starting services; here systemd decides).
        os.unlink(f"{root.path}/usr/sbin/policy-rc.d")
        os.makedirs(f"{root.path}/srv/debs")
        for deb in debs["new"].values():
            shutil.copy(deb, f"{root.path}/srv/debs/")
        os.makedirs(f"{root.path}/srv/pypam-probes")
        for name, text in (("writable.py", _WRITABLE_PROBE), ("devices.py", _DEVICE_PROBE),
                           ("join-cgroup-and-probe", _JOIN_CGROUP_AND_PROBE)):
            with open(f"{root.path}/srv/pypam-probes/{name}", "w") as f:
                f.write(text)
        tpm = start_swtpm(f"{root.path}/srv/tpm")
        os.chmod(f"{root.path}/srv/tpm", 0o711)  # the service, as pinutild, connects
        try:
            with BootedRoot(root) as system:
                yield system, tpm
        finally:
            tpm.kill()


#: The command after this runs as alice in her login groups, with her home (inside the
#: booted system: its own accounts, not the test's).
AS_ALICE = ("setpriv", "--reuid", "alice", "--regid", "alice", "--init-groups",
            "env", "HOME=/home/alice")


def _as_alice(system: BootedRoot, argv: list[str], stdin: str = "",
              check: bool = False) -> subprocess.CompletedProcess:
    return system.run([*AS_ALICE, *argv], input=stdin.encode(), check=check)


def _state(system: BootedRoot, *units: str) -> list[str]:
    return system.run(["systemctl", "is-active", *units], check=False).stdout.split()


def _main_pid(system: BootedRoot, unit: str) -> int:
    return int(system.run(["systemctl", "show", "-P", "MainPID", unit]).stdout)


def _status(system: BootedRoot, pid: int) -> dict[str, str]:
    text = system.run(["cat", f"/proc/{pid}/status"]).stdout
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _writable(system: BootedRoot, pid: int, paths: tuple[str, ...]) -> dict[str, str]:
    return json.loads(system.run(["nsenter", "-t", str(pid), "-m", "python3", "-I",
                                  "/srv/pypam-probes/writable.py", *paths]).stdout)


def _wait_for(what: str, predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {seconds} s")


def _proof_units(system: BootedRoot) -> set[str]:
    """The active pinutil-proof@ instances (one per proof, each named anew)."""
    out = system.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=active",
                      "pinutil-proof@*.service"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_units_under_systemd_as_pid1(booted):
    system, _tpm = booted

    # Installed into a running system: nothing enabled, nothing started.
    system.run(["sh", "-c", "apt-get install -y -qq --no-install-recommends /srv/debs/*.deb"])
    enabled = system.run(["systemctl", "is-enabled", "pinutild.socket", "pinutil-proof.socket"],
                         check=False).stdout.split()
    assert enabled == ["disabled", "disabled"]
    assert _state(system, *UNITS) == ["inactive"] * 3

    # The administrator's steps (docs/pinutild.md): the policy, the salt key's Name
    # recorded by root, the sockets enabled. The TPM device as udev would make it.
    root = system.root.path
    os.makedirs(f"{root}/etc/pinpam")
    with open(f"{root}/etc/pinpam/policy", "w") as f:
        f.write("tcti = swtpm:path=/srv/tpm/sock\nhelper_timeout = 60\n")
    with open(f"{root}/etc/pam.d/pypam-test", "w") as f:
        f.write("auth required pam_pypam.so module=tpm_pin backend=daemon\n"
                "account required pam_permit.so\n")
    major = _free_char_major()
    system.run(["sh", "-c", MAKE_DEVICE_NODES, "sh", str(major)])
    system.run(["pinutil", "salt-key", "record"])
    system.run(["systemctl", "enable", "--now", "pinutild.socket", "pinutil-proof.socket"])
    assert _state(system, *UNITS) == ["active", "inactive", "active"]
    assert system.run(["stat", "-c", "%a %U %G", "/run/pinutild.sock",
                       "/run/pinutil-proof.sock"]).stdout.splitlines() \
        == ["666 root root", "600 pinutild pinutild"]

    # The first connection (a user's) starts the service.
    done = _as_alice(system, ["pinutil", "--json", "status"], check=True)
    assert json.loads(done.stdout)["enrolled"] is False
    assert _state(system, "pinutild.service") == ["active"]
    pid = _main_pid(system, "pinutild.service")
    status = _status(system, pid)
    uid = system.run(["id", "-u", "pinutild"]).stdout.strip()
    gid = system.run(["id", "-g", "pinutild"]).stdout.strip()
    assert status["Uid"].split() == [uid] * 4 and status["Gid"].split() == [gid] * 4
    assert status["Groups"].split() == [gid]
    assert (status["NoNewPrivs"], status["Seccomp"]) == ("1", "2")  # 2: a filter
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status[caps])
    # A read-only system but for its state directory and its private /tmp; no homes.
    found = _writable(system, pid, (*READ_ONLY, "/var/lib/pinutild", "/tmp", "/home"))
    assert found == {**{path: "EROFS" for path in READ_ONLY}, "/var/lib/pinutild": "rw",
                     "/tmp": "rw", "/home": "EROFS"}, found
    assert system.run(["nsenter", "-t", str(pid), "-m", "ls", "-A", "/home"]).stdout == ""
    # Its device cgroup: /dev/tpmrm0 reaches the (absent) driver, another node not.
    probe = system.run(["sh", "/srv/pypam-probes/join-cgroup-and-probe", "/dev/tpmrm0",
                        "/dev/pypam-other", "/dev/null"], cgroup_namespace=False)
    assert json.loads(probe.stdout) == {"/dev/tpmrm0": "ENXIO", "/dev/pypam-other": "EPERM",
                                        "/dev/null": "opened"}, probe.stdout

    # Enrolment through the root password proof: a wrong password enrols nothing.
    done = _as_alice(system, ["pinutil", "--json", "--stdin", "setup"],
                     f"not-the-password\n{PIN}\n")
    assert json.loads(done.stdout)["result"] == "wrong_password", done.stdout
    done = _as_alice(system, ["pinutil", "--json", "status"], check=True)
    assert json.loads(done.stdout)["enrolled"] is False
    # The right one, and while the proof waits for it, its own namespace: root, on a
    # read-only system (it may write only pam_faillock's records).
    earlier = _proof_units(system)
    setup = subprocess.Popen(
        system.command([*AS_ALICE, "pinutil", "--json", "--stdin", "setup"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proof, = _wait_for("a new pinutil-proof@.service",
                           lambda: _proof_units(system) - earlier, 60)
        proof_pid = _main_pid(system, proof)
        # The unit is active from the fork on; its settings are all applied at the exec.
        _wait_for("pinutil-proof started", lambda: "/usr/sbin/pinutil-proof" in system.run(
            ["cat", f"/proc/{proof_pid}/cmdline"], check=False).stdout, 60)
        proof_status = _status(system, proof_pid)
        assert proof_status["Uid"].split() == ["0"] * 4
        assert (proof_status["NoNewPrivs"], proof_status["Seccomp"]) == ("1", "2")
        # Its bounding set: CAP_DAC_READ_SEARCH (2) alone, to read a 0000 /etc/shadow.
        assert int(proof_status["CapBnd"], 16) == 1 << 2, proof_status["CapBnd"]
        found = _writable(system, proof_pid, (*READ_ONLY, "/var/lib/pinutild", "/home"))
        assert found == {**{path: "EROFS" for path in READ_ONLY},
                         "/var/lib/pinutild": "EROFS", "/home": "EROFS"}, found
        out, err = setup.communicate(f"{PASSWORD}\n{PIN}\n".encode(), timeout=120)
    finally:
        if setup.poll() is None:
            setup.kill()
            setup.wait()
    assert setup.returncode == 0, (out, err)
    assert json.loads(out)["result"] == "success"

    # Idle: the service leaves, cleanly; its socket stays.
    _wait_for("pinutild.service idle exit",
              lambda: _state(system, "pinutild.service") == ["inactive"], IDLE_EXIT_BOUND)
    assert system.run(["systemctl", "show", "-P", "Result", "pinutild.service"]).stdout \
        == "success\n"
    assert _state(system, "pinutild.socket") == ["active"]

    # A login through libpam, decided by the service, which it starts again.
    done = _as_alice(system, ["pamtester", "pypam-test", "alice", "authenticate"],
                     f"{WRONG_PIN}\n")
    assert done.returncode != 0 and "Incorrect PIN" in done.stdout + done.stderr, done
    assert _state(system, "pinutild.service") == ["active"]
    done = _as_alice(system, ["pamtester", "pypam-test", "alice", "authenticate"], f"{PIN}\n")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # An upgrade (a reinstall runs the maintainer scripts as one): the sockets listen
    # again at once, and no old pinutild answers the new modules; nothing stopped is
    # started.
    before = _main_pid(system, "pinutild.service")
    system.run(["sh", "-c", REINSTALL])
    assert _state(system, "pinutild.socket", "pinutil-proof.socket") == ["active"] * 2
    assert _main_pid(system, "pinutild.service") != before
    done = _as_alice(system, ["pamtester", "pypam-test", "alice", "authenticate"], f"{PIN}\n")
    assert done.returncode == 0, (done.stdout, done.stderr)
    system.run(["systemctl", "stop", "pinutild.socket", "pinutil-proof.socket"])
    system.run(["sh", "-c", REINSTALL])
    assert _state(system, *UNITS) == ["inactive"] * 3
    system.run(["systemctl", "start", "pinutild.socket", "pinutil-proof.socket"])
    journal = system.run(["journalctl", "-b", "--no-pager", "-o", "cat"]).stdout
    assert "PIN accepted for alice" in journal
    assert "setup by alice (uid 1000) for alice (uid 1000): success" in journal

    # The loaded units score as the same files do offline, the documented scores that
    # tests/service/test_units.py and test_proof_units.py pin.
    for unit in ("pinutild.service", "pinutil-proof@1.service"):
        online = system.run(["systemd-analyze", "security", unit], check=False).stdout
        assert _exposure(online, unit) == _offline_exposure(unit), online
