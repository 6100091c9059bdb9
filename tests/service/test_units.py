"""systemd/pinutild.{socket,service}: the hardening stays (systemd-analyze's offline
exposure score must not get worse than measured, 0.7 "SAFE"), the socket is where
the policy's default `service_socket` points, the state directory is the policy's
default `state_dir`, the service runs what `make install` installs, with its own group
only, which the udev rule alone gives the TPM device (checked by what `udevadm test`
prints, in a private mount namespace); `make install` starts nothing. (Not run under
systemd here: this machine has no systemd as PID 1.)"""
from __future__ import annotations

import configparser
import grp
import os
import re
import subprocess

import pytest

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
                       ("DevicePolicy", "closed"), ("CapabilityBoundingSet", ""),
                       ("Group", "pinutild"), ("StateDirectory", "pinutild"),
                       ("StateDirectoryMode", "0700")):
        assert service[key] == value, key
    # The device's group is the service's own; no other group (tss was, before).
    assert "SupplementaryGroups" not in service


def test_the_state_directory_is_the_policys_default():
    service = unit("pinutild.service")["Service"]
    assert "/var/lib/" + service["StateDirectory"] == Policy._DEFAULTS["state_dir"]
    with open(os.path.join(ROOT, "Makefile"), encoding="utf-8") as f:
        assert f"STATEDIR    := {Policy._DEFAULTS['state_dir']}\n" in f.read()


# `udevadm test` of systemd 255 and older is no dry run: it applies the rules to the
# device's node and writes udev's database. So it runs in a private mount namespace with its own /dev (a null
# node of its own), /run, rules directory and /etc/group (the machine's plus a group
# pinutild): nothing of the machine's is read for rules or changed. The device is
# /dev/null, which every machine has; the TPM rules are tested as written (they parse,
# their group resolves) and, for what they do, as stand-ins matching `null`.
_UDEV_TEST = """
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev
mknod -m 0666 /dev/null c 1 3
mount -t tmpfs tmpfs /etc/udev/rules.d
cp "$1"/*.rules /etc/udev/rules.d/
cp /etc/group "$1/group" && echo "pinutild:x:$2:" >> "$1/group" && mount --bind "$1/group" /etc/group
udevadm test --action=add /sys/devices/virtual/mem/null 2>&1
stat -c 'result: %u %g %a' /dev/null
"""
TPM_UDEV = "/lib/udev/rules.d/60-tpm-udev.rules"  # Debian's tpm-udev (libtss2 needs it)
PINUTILD_GID = 64999


def _udev_test(directory: str) -> list[str]:
    done = subprocess.run(["unshare", "-m", "sh", "-c", _UDEV_TEST, "sh", directory,
                           str(PINUTILD_GID)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout.splitlines()


# What `udevadm test` says the node gets, in the two forms it is printed in: systemd 255
# and older log what they apply to the node (src/udev/udev-node.c, "Setting
# permissions"); from 256 on the test is a dry run that ends with a summary
# (src/udev/udev-dump.c dump_event(): "Device node owner:", then the value indented on
# the next line; 258 names them "owner user"/"owner group").
_APPLIED = re.compile(r"null: Setting permissions /dev/null, uid=(\d+), gid=(\d+), mode=(0[0-7]+)")
_SUMMARY = {"uid": re.compile(r"Device node owner( user)?:"),
            "gid": re.compile(r"Device node (owner )?group:"),
            "mode": re.compile(r"Device node permission:")}
_SUMMARY_VALUE = {"uid": re.compile(r"  \S+ \(uid=(\d+)\)"), "gid": re.compile(r"  \S+ \(gid=(\d+)\)"),
                  "mode": re.compile(r"  (0[0-7]+)")}


def printed_node(lines: list[str]) -> tuple[int, int, int]:
    """(uid, gid, mode) of /dev/null as `udevadm test` printed them; an AssertionError
    when it printed neither form, or both, or a form only in part: udevadm output this
    test does not know is a failure, never a pass."""
    applied = [m.groups() for m in map(_APPLIED.fullmatch, lines) if m]
    summary = {}
    for field, header in _SUMMARY.items():
        places = [i for i, line in enumerate(lines) if header.fullmatch(line)]
        values = [_SUMMARY_VALUE[field].fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
                  for i in places]
        assert len(places) <= 1 and None not in values, (field, lines)
        if values:
            summary[field] = values[0].group(1)
    assert (len(applied) == 1) != (len(summary) == 3), \
        f"udevadm test printed no node permissions this test knows: {applied} {summary} {lines}"
    uid, gid, mode = applied[0] if applied else (summary["uid"], summary["gid"], summary["mode"])
    return int(uid), int(gid), int(mode, 8)


@pytest.mark.parametrize("rules,group", [("udev/60-pypam-tpm.rules", "pinutild"),
                                          ("udev/fallback/60-pypam-tpm.rules", "tss")])
def test_the_udev_rule_gives_the_device_to_one_group(tmp_path, rules, group):
    with open(os.path.join(ROOT, rules), encoding="utf-8") as f:
        text = f.read()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    # The resource manager's device, and with the service the raw /dev/tpm0 for root
    # (test_with_the_service_the_raw_device_is_roots_alone); nothing else.
    raw = ['KERNEL=="tpm[0-9]*", '] if group == "pinutild" else []
    assert [line[:len('KERNEL=="tpmrm[0-9]*", ')] if line.startswith('KERNEL=="tpmrm')
            else line[:len('KERNEL=="tpm[0-9]*", ')] for line in lines] == \
        ['KERNEL=="tpmrm[0-9]*", ', *raw], lines
    # As written: it parses and its group exists (udevadm names what it cannot use).
    written = tmp_path / "written"
    written.mkdir()
    (written / "60-pypam-tpm.rules").write_text(text)
    about_ours = [line for line in _udev_test(str(written)) if "60-pypam-tpm.rules" in line]
    assert about_ours == ["Reading rules file: /etc/udev/rules.d/60-pypam-tpm.rules"], about_ours
    # What it does, next to Debian's rule (read after ours), both on a stand-in device.
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir()
    with open(TPM_UDEV, encoding="utf-8") as f:
        debian = f.read()
    for name, rule in (("60-pypam-tpm.rules", text), ("60-tpm-udev.rules", debian)):
        (stand_in / name).write_text(rule.replace('KERNEL=="tpmrm[0-9]*"', 'KERNEL=="null"'))
    gid = PINUTILD_GID if group == "pinutild" else grp.getgrnam("tss").gr_gid
    output = _udev_test(str(stand_in))
    uid, node_gid, mode = printed_node(output)
    assert (node_gid, mode) == (gid, 0o660), output
    if group == "pinutild":  # and root owns it (tpm-udev makes the user tss its owner)
        assert uid == 0, output
    if any(_APPLIED.fullmatch(line) for line in output):  # it applied what it printed
        stat = [line for line in output if line.startswith("result: ")]
        assert stat[-1].split()[1:] == [str(uid), str(node_gid), f"{mode:o}"], stat


def test_with_the_service_the_raw_device_is_roots_alone(tmp_path):
    """/dev/tpm0: tpm-udev gives it to the user tss for tpm2-abrmd, whose D-Bus policy
    lets the group tss send the TPM any command (review F1: on the old rule the raw
    device stayed tss's, 0660). With the service it is root's alone, 0600 root:root,
    whatever Debian's rule, read after ours, says (on a stand-in device)."""
    stand_in = tmp_path / "stand-in"
    stand_in.mkdir()
    for name, path in (("60-pypam-tpm.rules", os.path.join(ROOT, "udev", "60-pypam-tpm.rules")),
                       ("60-tpm-udev.rules", TPM_UDEV)):
        with open(path, encoding="utf-8") as f:
            rule = f.read()
        assert 'KERNEL=="tpm[0-9]*"' in rule, path
        (stand_in / name).write_text(rule.replace('KERNEL=="tpmrm[0-9]*"', 'KERNEL=="tpmrm-none"')
                                     .replace('KERNEL=="tpm[0-9]*"', 'KERNEL=="null"'))
    output = _udev_test(str(stand_in))
    assert printed_node(output) == (0, 0, 0o600), output
    if any(_APPLIED.fullmatch(line) for line in output):  # it applied what it printed
        stat = [line for line in output if line.startswith("result: ")]
        assert stat[-1].split()[1:] == ["0", "0", "600"], stat


# The two forms as systemd 252 (Debian 12) and 257 (Debian 13) print them for the
# pypam rule on the stand-in device, trimmed (taken from a run of each).
_PRINTED_252 = """\
null: /etc/udev/rules.d/60-pypam-tpm.rules:9 GROUP 64999
null: Setting permissions /dev/null, uid=0, gid=64999, mode=0660
DEVMODE=0666"""
_PRINTED_257 = """\
null: /etc/udev/rules.d/60-pypam-tpm.rules:9 GROUP 64999
Properties:
  DEVMODE=0666
Inotify watch:
  disabled
Device node owner:
  root (uid=0)
Device node group:
  pinutild (gid=64999)
Device node permission:
  0660"""


def test_both_forms_of_udevadm_tests_output_are_read_and_nothing_else():
    assert printed_node(_PRINTED_252.splitlines()) == (0, 64999, 0o660)
    assert printed_node(_PRINTED_257.splitlines()) == (0, 64999, 0o660)
    unknown = [_PRINTED_257.replace("Device node group:", "Device node's group:"),  # renamed
               _PRINTED_257.replace("(gid=64999)", "gid 64999"),  # another value form
               "\n".join(_PRINTED_257.splitlines()[:-2]),  # no permission
               _PRINTED_252 + "\n" + _PRINTED_257,  # both
               "DEVMODE=0666"]  # neither
    for printed in unknown:
        with pytest.raises(AssertionError):
            printed_node(printed.splitlines())


def _make_install_commands(*variables: str) -> str:
    """What `make install` would run (make -n: printed, nothing run)."""
    done = subprocess.run(["make", "-n", "-C", ROOT, "install", "DESTDIR=/nonexistent-stage",
                           *variables], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return "\n".join(line for line in done.stdout.splitlines()
                     if not line.lstrip().startswith("#"))  # the recipe's comments


def test_make_install_starts_nothing_and_chooses_the_devices_group():
    with_service = _make_install_commands()
    fallback = _make_install_commands("SERVICE=no")
    for commands in (with_service, fallback):
        assert "systemctl" not in commands and "deb-systemd" not in commands
        assert "pinutild --" not in commands and "sbin/pinutild " not in commands
    assert "install -m 0644 udev/60-pypam-tpm.rules" in with_service
    assert "chmod 2755" not in with_service and "tss" not in with_service
    assert "pinutild.service" in with_service and "useradd --system" in with_service
    assert "install -m 0644 udev/fallback/60-pypam-tpm.rules" in fallback
    assert "chmod 2755 /nonexistent-stage/usr/bin/pinutil" in fallback
    assert "pinutild.s" not in fallback and "useradd" not in fallback  # no units, no user


def test_make_install_installs_the_keyring_rekey_tool_with_or_without_the_service():
    for commands in (_make_install_commands(), _make_install_commands("SERVICE=no")):
        assert ("install -m 0755 tools/pypam-keyring-rekey "
                "/nonexistent-stage/usr/sbin/pypam-keyring-rekey") in commands
