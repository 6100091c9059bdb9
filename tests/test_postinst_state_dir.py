"""The package's postinst makes the state directory without following what the service
account left inside it (REVIEW2 G2).

/var/lib/pinutild is the service account's own directory: it may replace
`enrolments` with a symlink to any directory (/etc). The postinst runs as root at
every install and upgrade; had it made `enrolments` by name as root (`install -d -o
pinutild ... /var/lib/pinutild/enrolments`), GNU install would chown and chmod the
symlink's target.

The real debian/pypam-tpm-pin.postinst runs here, as root, in a private mount
namespace: a tmpfs over /var/lib, copies of /etc/passwd and /etc/group with a
`pinutild` account bound over the real files, and stand-ins on PATH for the commands
that would act on the machine (adduser, dpkg-statoverride, pinutil, python3,
pam-auth-update, udevadm). install, mkdir and setpriv are the real ones. Nothing of
the machine is written (an /etc/pinpam/owner-auth exists only in an overlay of /etc).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POSTINST = os.path.join(ROOT, "debian", "pypam-tpm-pin.postinst")
SERVICE_UID = 64999  # pinutild inside the namespace only

# Commands the postinst calls that would act on the machine: each stand-in does
# nothing (dpkg-statoverride --list: "no override", as on a fresh system).
STAND_INS = {
    "adduser": "exit 0",
    "dpkg-statoverride": "exit 1",
    "pinutil": 'echo "$*" >> "$WORK/pinutil.log"',
    "python3": "exit 0",
    "pam-auth-update": "exit 0",
    "udevadm": "exit 0",
}

# Inside the namespace (root): the account copies, a private /var/lib, the service
# account's symlink (made as that account), then the real postinst.
_SCRIPT = r"""
set -eu
if [ -n "$OWNER_AUTH" ]; then  # an overlay: /etc/pinpam only in here
    # Its upper layer on a tmpfs: overlayfs refuses an upper directory on overlayfs,
    # which /tmp is in the fresh roots of make test-distros.
    mkdir "$WORK/overlay"
    mount -t tmpfs tmpfs "$WORK/overlay"
    mkdir "$WORK/overlay/upper" "$WORK/overlay/work"
    mount -t overlay overlay -o "lowerdir=/etc,upperdir=$WORK/overlay/upper,workdir=$WORK/overlay/work" /etc
    mkdir -p /etc/pinpam
    printf '%b' "$OWNER_AUTH" > /etc/pinpam/owner-auth
fi
mount --bind "$WORK/passwd" /etc/passwd
mount --bind "$WORK/group" /etc/group
mount -t tmpfs tmpfs /var/lib
install -d -o pinutild -g pinutild -m 0700 /var/lib/pinutild
if [ "$PLANT" = yes ]; then
    setpriv --reuid=pinutild --regid=pinutild --clear-groups \
        ln -s "$WORK/victim" /var/lib/pinutild/enrolments
fi
PATH="$WORK/bin:$PATH" sh "$POSTINST" configure
stat -c '%U:%G %a %F' /var/lib/pinutild /var/lib/pinutild/enrolments
"""


@pytest.fixture
def work():
    directory = tempfile.mkdtemp(prefix="pypam-postinst-", dir="/tmp")
    os.chmod(directory, 0o755)
    os.mkdir(os.path.join(directory, "victim"), 0o755)
    os.chmod(os.path.join(directory, "victim"), 0o755)
    bin_dir = os.path.join(directory, "bin")
    os.mkdir(bin_dir)
    for name, body in STAND_INS.items():
        path = os.path.join(bin_dir, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)
    account = f"pinutild:x:{SERVICE_UID}:{SERVICE_UID}::/nonexistent:/usr/sbin/nologin"
    for name, line in (("passwd", account), ("group", f"pinutild:x:{SERVICE_UID}:")):
        with open(f"/etc/{name}") as f:
            kept = [x for x in f.read().splitlines() if not x.startswith("pinutild:")]
        with open(os.path.join(directory, name), "w") as f:
            f.write("\n".join([*kept, line]) + "\n")
        os.chmod(os.path.join(directory, name), 0o644)
    yield directory
    shutil.rmtree(directory)


def _run_postinst(work: str, plant: bool, owner_auth: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "WORK": work, "POSTINST": POSTINST,
             "PLANT": "yes" if plant else "no", "OWNER_AUTH": owner_auth},
        capture_output=True, text=True, timeout=60, check=False)


def test_a_symlink_the_service_planted_is_not_followed(work):
    victim = os.path.join(work, "victim")
    before = os.stat(victim)
    done = _run_postinst(work, plant=True)
    after = os.stat(victim)
    assert (after.st_uid, after.st_gid, after.st_mode & 0o7777) == \
        (before.st_uid, before.st_gid, 0o755), "the postinst chowned/chmodded the target"
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_fresh_install_makes_the_service_layout(work):
    done = _run_postinst(work, plant=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split("\n")[:2] == [
        "pinutild:pinutild 700 directory",
        "pinutild:pinutild 700 directory"], done.stdout + done.stderr


@pytest.mark.parametrize(("owner_auth", "moved"), [
    (f"owner {'ab' * 32}\\nlockout {'cd' * 32}\\n", True),  # the layout before (G1)
    (f"owner {'ab' * 32}\\n", False),
    ("", False)])
def test_an_owner_password_file_with_the_lockout_line_is_split_at_upgrade(
        work, owner_auth, moved):
    """REVIEW2 G1: /etc/pinpam/owner-auth of versions before held the lockout password
    too, readable by the service's group: the postinst runs `pinutil owner protect`,
    which moves it into owner-auth.lockout (root only), only then."""
    done = _run_postinst(work, plant=False, owner_auth=owner_auth)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(os.path.join(work, "pinutil.log")) as f:
        calls = f.read().splitlines()
    assert ("owner protect" in calls) == moved, calls
