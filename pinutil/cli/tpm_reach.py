"""Who besides root and pinutild can send commands to the TPM: what root's
`pinutil status` warns about (README "Who can do what", review F1).

Installed with the service, only root and the service's account should reach the TPM:
every other process asks pinutild, which keeps the per-user rules and delay. Two
ways past it are the system's, not ours:

- a TPM device node another account or group may open. Debian's tpm-udev gives the
  raw /dev/tpm0 to tss:tss 0660 (our udev rule takes only /dev/tpmrm0);
- tpm2-abrmd, Debian's resource manager daemon: it runs as tss on /dev/tpm0 and its
  D-Bus policy lets the group tss (and the user tss) send it TPM commands.

With an empty owner password either one lets its holder replace any PIN index (log in
as anyone); `pinutil owner protect` narrows that to spending and locking PINs.

Cheap and without side effects: stat of the device nodes and a read of the D-Bus
policy files; no TPM command, no D-Bus call, nothing started. Whether tpm2-abrmd runs
is not asked (D-Bus activation starts it on demand): its policy on the system is
enough to warn. Without the service's account (the set-gid fallback) the user and
group tss are expected to reach the TPM and are not reported.
"""
from __future__ import annotations

import glob
import grp
import os
import pwd
import stat
from xml.etree import ElementTree

from pinutil.pin.state import service_ids

DEV_DIR = "/dev"
DEVICE_PATTERNS = ("tpm[0-9]*", "tpmrm[0-9]*")
TABRMD_BUS_NAME = "com.intel.tss2.Tabrmd"
DBUS_POLICY_DIRS = ("/etc/dbus-1/system.d", "/usr/share/dbus-1/system.d")
FALLBACK_GROUP = "tss"  # the set-gid fallback's TPM group (udev/fallback)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _expected() -> tuple[set[str], set[str]]:
    """(user names, group names) that may reach the TPM in this layout."""
    ids = service_ids()
    if ids is None:
        return {"root", FALLBACK_GROUP}, {"root", FALLBACK_GROUP}
    return {"root", _user_name(ids[0])}, {"root", _group_name(ids[1])}


def _device_warnings(dev_dir: str, users: set[str], groups: set[str]) -> list[str]:
    found = []
    paths = sorted({p for pattern in DEVICE_PATTERNS
                    for p in glob.glob(os.path.join(dev_dir, pattern))})
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISCHR(st.st_mode):
            continue
        owner, group, mode = _user_name(st.st_uid), _group_name(st.st_gid), st.st_mode
        who = []
        if owner not in users:  # an owner may chmod its node: any mode is access
            who.append(f"user {owner}")
        if mode & (stat.S_IRGRP | stat.S_IWGRP) and group not in groups:
            who.append(f"group {group}")
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            who.append("everyone")
        if who:
            found.append(f"{path} ({owner}:{group} {stat.S_IMODE(mode):04o}) is open to "
                         f"{' and '.join(who)}, past pinutild")
    return found


def _tabrmd_senders(path: str) -> list[str]:
    """Who `path`'s <policy> elements allow to send to tpm2-abrmd's bus name."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    senders = []
    for policy in root.iter("policy"):
        if not any(allow.get("send_destination") == TABRMD_BUS_NAME
                   for allow in policy.iter("allow")):
            continue
        if "user" in policy.attrib:
            senders.append(("user", policy.get("user")))
        elif "group" in policy.attrib:
            senders.append(("group", policy.get("group")))
        else:  # context="default" or "mandatory", at_console: anyone it matches
            senders.append(("everyone", ""))
    return senders


def _tabrmd_warnings(dbus_dirs: tuple[str, ...], users: set[str],
                     groups: set[str]) -> list[str]:
    found = []
    for directory in dbus_dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.conf"))):
            who = []
            for kind, name in _tabrmd_senders(path):
                expected = users if kind == "user" else groups if kind == "group" else set()
                text = f"{kind} {name}".strip()
                if name not in expected and text not in who:
                    who.append(text)
            if who:
                found.append(f"tpm2-abrmd's D-Bus policy {path} lets {' and '.join(who)} "
                             "send TPM commands past pinutild (when tpm2-abrmd runs; "
                             "`systemctl mask tpm2-abrmd` or remove the package)")
    return found


def warnings(dev_dir: str = DEV_DIR,
             dbus_dirs: tuple[str, ...] = DBUS_POLICY_DIRS) -> list[str]:
    """One sentence per way past pinutild to the TPM; empty when there is none."""
    users, groups = _expected()
    return _device_warnings(dev_dir, users, groups) + \
        _tabrmd_warnings(dbus_dirs, users, groups)
