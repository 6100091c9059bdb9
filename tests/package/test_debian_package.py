"""`make deb`: the Debian packages, built, linted, and used in a throw-away Debian 12 root.

The packages (the fixture `debs`, tests/package/debs.py) are built by the real
target, as they are and as a "previous build" the upgrade starts from. The root is a
copy of a cached debootstrap minbase root (tests/support/debian_root.py); nothing is
installed on this machine. A swtpm on this machine serves the root through a socket
inside it.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from tests.package.debs import PACKAGES, ROOT
from tests.package.debs import dependencies as _dependencies
from tests.package.debs import version as _version
from tests.support.debian_root import DebianRoot
from tests.support.swtpm import start_swtpm
from tests.test_setup_packages import python_files

PIN, WRONG_PIN, PASSWORD = "2580", "1111", "pw-of-alice"
# The root's own files that change with any package operation, whoever makes it.
VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/cache/apt", "/var/lib/apt",
            "/var/lib/dpkg", "/var/log", "/var/cache/debconf", "/var/cache/ldconfig",
            "/etc/ld.so.cache")


def _field(deb: str, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, name], check=True, capture_output=True,
                          text=True).stdout.strip()


def _contents(deb: str) -> dict[str, str]:
    """{path: "mode owner/group"} of a .deb."""
    out = subprocess.run(["dpkg-deb", "-c", deb], check=True, capture_output=True,
                         text=True).stdout
    result = {}
    for line in out.splitlines():
        mode, owner, *_, path = line.split(None, 5)
        result[path.removeprefix(".").split(" -> ")[0].rstrip("/") or "/"] = f"{mode} {owner}"
    return result


# --- the packages as files ----------------------------------------------------------

def test_lintian_reports_nothing_unexplained(debs):
    # Overrides (debian/*.lintian-overrides) say why each remaining tag is accepted.
    result = subprocess.run(["lintian", "--pedantic", "-I", "--fail-on", "none",
                             debs["changes"]], capture_output=True, text=True, check=False)
    tags = [line for line in result.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert tags == [], "\n".join(tags)


def test_files_and_places(debs):
    shim = _contents(debs["new"]["libpam-pypam"])
    tpm = _contents(debs["new"]["pypam-tpm-pin"])
    multiarch = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], check=True,
                               capture_output=True, text=True).stdout.strip()
    assert shim[f"/usr/lib/{multiarch}/security/pam_pypam.so"].startswith("-rw-r--r--")
    assert "/usr/lib/pypam/python/pypam/loader.py" in shim
    assert "/usr/share/man/man8/pam_pypam.8.gz" in shim
    assert shim["/usr/bin/pypam"] == "-rwxr-xr-x root/root"
    assert "/usr/share/man/man8/pypam.8.gz" in shim
    # No set-id bit anywhere: users reach the TPM through pinutild.
    assert tpm["/usr/bin/pinutil"] == "-rwxr-xr-x root/root"
    for path in ("/usr/lib/pypam/modules/tpm_pin.py", "/usr/lib/pypam/modules/master_key.py",
                 "/usr/lib/pypam/python/pinutil/master_key/bip39_english.txt",
                 "/usr/lib/pypam/python/pinutil/service/client.py",  # backend=daemon
                 "/lib/udev/rules.d/60-pypam-tpm.rules",
                 "/usr/share/pam-configs/pypam-tpm-pin",
                 "/usr/share/man/man8/pam_tpm_pin.8.gz",
                 "/usr/share/man/man8/pam_master_key.8.gz",
                 "/usr/share/man/man8/pinutil.8.gz",
                 "/usr/share/man/man8/pinutild.8.gz"):
        assert path in tpm, path
    # pinutild: its command and its units where Debian's systemd looks for them.
    assert tpm["/usr/sbin/pinutild"] == "-rwxr-xr-x root/root"
    assert tpm["/lib/systemd/system/pinutild.socket"] == "-rw-r--r-- root/root"
    assert tpm["/lib/systemd/system/pinutild.service"] == "-rw-r--r-- root/root"
    # Its root password proof (docs/pinutild.md): command and units.
    assert tpm["/usr/sbin/pinutil-proof"] == "-rwxr-xr-x root/root"
    assert tpm["/lib/systemd/system/pinutil-proof.socket"] == "-rw-r--r-- root/root"
    assert tpm["/lib/systemd/system/pinutil-proof@.service"] == "-rw-r--r-- root/root"
    # The keyring re-key tool (pypam-keyring-rekey(8)), root's.
    assert tpm["/usr/sbin/pypam-keyring-rekey"] == "-rwxr-xr-x root/root"
    assert "/usr/share/man/man8/pypam-keyring-rekey.8.gz" in tpm
    everything = list(shim) + list(tpm)
    assert not [p for p in everything if p.endswith(".pyc") or "__pycache__" in p]
    # Every Python file of every subpackage (setup.py finds them), but the cffi build
    # scripts, which debian/rules leaves out: they are build time only.
    build_only = {"pypam/_libpam_build.py", "pinutil/tpm/binding_build.py"}
    missing = [rel for rel in python_files(ROOT) - build_only
               if f"/usr/lib/pypam/python/{rel}" not in everything]
    assert missing == []
    assert not [p for p in everything if p.endswith("_build.py")]  # build-time only
    # Nothing downloaded from PyPI is shipped: Debian's own modules are dependencies.
    assert not [p for p in everything if re.search(r"/(cffi|cryptography|argon2)", p)]


def _control_file(deb: str, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--info", deb, name], check=True, capture_output=True,
                          text=True).stdout


def test_pinutild_is_neither_enabled_nor_started_by_installation(debs):
    # With backend=auto, logins use pinutild whenever its socket exists: installing the
    # package must not switch anyone's login path. The root below has no systemd to
    # ask, so the maintainer scripts are read: no enable, no start, no restart of what
    # is stopped. The one systemd call, on upgrade, restarts what runs (try-restart),
    # after reloading the unit files; nothing stops our units before an upgrade (they
    # would stay stopped: tests/package/test_systemd_pid1.py runs it all under systemd).
    deb = debs["new"]["pypam-tpm-pin"]
    postinst = _control_file(deb, "postinst")
    assert "pinutild.socket" in postinst  # dh_installsystemd's state keeping is there
    assert "pinutil-proof.socket" in postinst  # and the password proof's
    calls = [line.strip() for line in postinst.splitlines()
             if "deb-systemd-invoke" in line or "systemctl" in line]
    restart = "deb-systemd-invoke try-restart pinutild.socket pinutil-proof.socket"
    assert calls == ["systemctl --system daemon-reload >/dev/null || :",
                     f"{restart} >/dev/null || :"], calls
    listing = subprocess.run(["dpkg-deb", "--info", deb], check=True, capture_output=True,
                             text=True).stdout
    assert " preinst" not in listing  # debhelper's would stop our units before an upgrade
    # Enabled again only where the administrator had enabled it (an upgrade).
    lines = postinst.splitlines()
    for i, line in enumerate(lines):
        if "deb-systemd-helper enable" in line:
            guard = next(g for g in reversed(lines[:i]) if g.strip().startswith("if "))
            assert ("was-enabled 'pinutild.socket'" in guard
                    or "was-enabled 'pinutil-proof.socket'" in guard), guard
    wrapper = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], check=True,
                             capture_output=True).stdout
    assert b"from pinutil.service.__main__ import main" in wrapper


def test_the_tpm_is_the_services_group_alone(debs):
    """The packaged udev rule gives /dev/tpmrm0 to root and group pinutild only (after
    tpm-udev's tss:tss rule, which it overrides), and the unit runs with that group and
    no other."""
    rules = subprocess.run(["dpkg-deb", "--fsys-tarfile", debs["new"]["pypam-tpm-pin"]],
                           check=True, capture_output=True).stdout
    # Final (:=): tpm-udev's rule, read after it, cannot change it (what the rule does is
    # tested with udevadm in tests/service/test_units.py).
    assert b'KERNEL=="tpmrm[0-9]*", TAG+="systemd", MODE:="0660", OWNER:="root", ' \
        b'GROUP:="pinutild"' in rules
    assert b"SupplementaryGroups" not in rules and b"Group=pinutild" in rules


def test_dependencies_pin_the_python_it_was_built_for(debs):
    major, minor = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(*sys.version_info[:2])"],
                                  check=True, capture_output=True, text=True).stdout.split()
    for package in PACKAGES:
        depends = _field(debs["new"][package], "Depends")
        assert f"libpython{major}.{minor} " in depends, depends
        assert f"python3 (>= {major}.{minor}~)" in depends, depends
        assert f"python3 (<< {major}.{int(minor) + 1})" in depends, depends
    tpm = _field(debs["new"]["pypam-tpm-pin"], "Depends")
    for dependency in ("python3-cryptography", "python3-argon2", "tpm-udev", "adduser",
                       f"libpam-pypam (= {_version()})"):
        assert dependency in tpm
    assert "python3-cffi-backend" in _field(debs["new"]["libpam-pypam"], "Depends")
    assert "pytss" not in tpm  # tpm2-pytss is for the tests only


def test_pam_auth_update_profile_is_off_by_default_and_above_pam_unix():
    with open(f"{ROOT}/debian/pam-configs/pypam-tpm-pin") as f:
        profile = f.read()
    assert re.search(r"^Default: no$", profile, re.MULTILINE)
    assert int(re.search(r"^Priority: (\d+)$", profile, re.MULTILINE).group(1)) > 256  # pam_unix
    auth = profile.split("Auth:\n", 1)[1].strip().splitlines()
    assert auth == ["[success=end default=ignore]\tpam_pypam.so module=tpm_pin"]


# --- the packages installed in a fresh Debian 12 root -------------------------------

def _next_python3_deb(directory: str) -> str:
    """A stand-in for python3 of the next minor version, as a .deb in `directory`."""
    major, minor = sys.version_info[:2]
    version = f"{major}.{minor + 1}.0-1"
    with tempfile.TemporaryDirectory() as tree:
        os.makedirs(f"{tree}/DEBIAN")
        with open(f"{tree}/DEBIAN/control", "w") as f:
            f.write(f"Package: python3\nVersion: {version}\nArchitecture: all\n"
                    "Maintainer: pypam tests <tests@example.org>\n"
                    "Description: stand-in for the next python3\n")
        name = f"python3_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--build", "--root-owner-group", tree, f"{directory}/{name}"],
                       check=True, capture_output=True)
    return name


def _pamtester(root: DebianRoot, *answers: str) -> subprocess.CompletedProcess:
    return root.run(["pamtester", "pypam-test", "alice", "authenticate"],
                    input="".join(a + "\n" for a in answers).encode(), check=False)


def _status(root: DebianRoot) -> str:
    return root.run(["pinutil", "--json", "status", "alice"]).stdout


# Inside the root: the installed pinutild, as its own user and group only (as the unit
# runs it), on a socket of its own; the installed client asks it once.
_ASK_PINUTILD = """
import json, socket, sys, time
sys.path.insert(0, "/usr/lib/pypam/python")
from pinutil.service import client
path = sys.argv[1]
for _ in range(3000):  # until it listens (the file appears at bind, before listen)
    probe = socket.socket(socket.AF_UNIX)
    try:
        probe.connect(path)
        break
    except OSError:
        time.sleep(0.01)
    finally:
        probe.close()
print(json.dumps(client.call(path, {"verb": "pin-status", "user": "alice"}, 60)))
"""
_RUN_PINUTILD = """
set -e
install -d -o pinutild -g pinutild -m 0755 /tmp/pinutild
setpriv --reuid pinutild --regid pinutild --clear-groups \\
    /usr/sbin/pinutild --listen /tmp/pinutild/sock 2>/tmp/pinutild/log &
service=$!
status=0
python3 -I -c "$1" /tmp/pinutild/sock || { status=$?; cat /tmp/pinutild/log >&2; }
kill $service; wait $service || true
exit $status
"""
# What a version before the state directory left (issue 10): alice's record in
# /var/lib/pinpam/enrolments (root:tss 0770), the salt key record next to the policy,
# pinutil set-gid tss and that directory through statoverrides.
_AS_BEFORE_THE_STATE_DIR = """
set -e
install -d -m 0755 /var/lib/pinpam
install -d -m 0770 -g tss /var/lib/pinpam/enrolments
for record in /var/lib/pinutild/enrolments/*; do
    mv "$record" /var/lib/pinpam/enrolments/ && chown root:tss /var/lib/pinpam/enrolments/*
done
mv /var/lib/pinutild/salt_key /etc/pinpam/salt_key && chown root:root /etc/pinpam/salt_key
dpkg-statoverride --update --add root tss 2755 /usr/bin/pinutil
dpkg-statoverride --add root tss 0770 /var/lib/pinpam/enrolments
"""
# The accounts' files: the system user pinutild stays after purge, as documented.
ACCOUNT_FILES = tuple(f"/etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow")
                      for suffix in ("", "-"))


def _accounts(root: DebianRoot) -> dict[str, set[str]]:
    result = {}
    for path in ACCOUNT_FILES[::2]:
        with open(root.path + path) as f:
            result[path] = set(f.read().splitlines())
    return result


def _without_accounts(files: set[str]) -> set[str]:
    return {entry for entry in files if entry.split(" ", 1)[0] not in ACCOUNT_FILES}


def test_install_pin_login_upgrade_and_purge_in_a_fresh_root(debs):
    with DebianRoot("bookworm") as root:
        root.run(["apt-get", "update", "-qq"])
        root.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                  "pamtester", "passwd", *_dependencies(debs["new"])])
        root.run(["useradd", "-m", "alice"])
        root.run(["chpasswd"], input=f"alice:{PASSWORD}\n".encode())
        before, accounts_before = root.files(VOLATILE), _accounts(root)

        os.makedirs(f"{root.path}/tmp/debs")
        for version in ("previous", "new"):
            for deb in debs[version].values():
                shutil.copy(deb, f"{root.path}/tmp/debs/{version}-{os.path.basename(deb)}")
        installed = root.run(
            ["sh", "-c", "apt-get install -y --no-install-recommends /tmp/debs/previous-*.deb"])
        assert re.search(r"0 upgraded, 2 newly installed", installed.stdout), installed.stdout

        # Installed: no set-id bit, the service's state directory, the profile present
        # but off.
        assert root.run(["stat", "-c", "%a %U %G", "/usr/bin/pinutil"]).stdout == "755 root root\n"
        assert root.run(["dpkg-statoverride", "--list"], check=False).stdout == ""
        assert root.run(["stat", "-c", "%a %U %G", "/var/lib/pinutild"]).stdout \
            == "700 pinutild pinutild\n"
        assert not os.path.exists(f"{root.path}/var/lib/pinpam")
        with open(f"{root.path}/etc/pam.d/pinutil") as f:  # setup's password proof
            assert "pam_unix.so" in f.read()
        with open(f"{root.path}/etc/pam.d/common-auth") as f:
            assert "pam_pypam" not in f.read()
        # pinutild's system user: no login, no home, in its own group only.
        account = root.run(["getent", "passwd", "pinutild"]).stdout.split(":")
        assert account[5:] == ["/nonexistent", "/usr/sbin/nologin\n"], account
        assert int(account[2]) < 1000 and not os.path.exists(f"{root.path}/nonexistent")
        assert root.run(["id", "-nG", "pinutild"]).stdout == "pinutild\n"
        # Nothing enabled: no unit linked into any target.
        assert root.run(["sh", "-c", "grep -rl pinutild /etc/systemd || true"]).stdout == ""

        tpm = start_swtpm(f"{root.path}/tmp/tpm")
        # pinutild runs as its own user: it may pass the state directory to the socket.
        os.chmod(f"{root.path}/tmp/tpm", 0o711)
        try:
            os.makedirs(f"{root.path}/etc/pinpam")
            with open(f"{root.path}/etc/pinpam/policy", "w") as f:
                # A generous TPM budget: this machine may be busy (no timing is tested).
                f.write("tcti = swtpm:path=/tmp/tpm/sock\nhelper_timeout = 60\n")
            with open(f"{root.path}/etc/pam.d/pypam-test", "w") as f:
                f.write("@include common-auth\n")
            root.run(["pinutil", "--stdin", "setup", "alice"], input=f"{PIN}\n".encode())
            # Debian's cryptography 38 has no Argon2id: python3-argon2 seals the file.
            root.run(["pinutil", "--yes", "master-key", "init"])
            token = root.run(["pinutil", "master-key", "get-user-token", "alice"]).stdout

            root.run(["pam-auth-update", "--enable", "pypam-tpm-pin"])
            with open(f"{root.path}/etc/pam.d/common-auth") as f:
                common_auth = f.read()
            assert common_auth.index("pam_pypam.so module=tpm_pin") < common_auth.index("pam_unix.so")
            # The installed stack engine reads the real stack the profile made.
            simulated = json.loads(root.run(
                ["pypam", "stack", "simulate", "pypam-test", "--stage", "auth", "--json",
                 "--result", "tpm_pin=success", "--result", "pam_permit.so=success",
                 "--default", "auth_err"]).stdout)
            # The PIN line runs first and its success jumps over pam_unix and pam_deny.
            assert simulated["result"] == "success"
            assert [line["module"].rsplit("/", 1)[-1] for line in simulated["ran"]] \
                == ["pam_pypam.so", "pam_permit.so"]

            # The PIN logs in; a wrong PIN falls through to the password; wrong both: no.
            for answers, succeeds in (((PIN,), True), ((WRONG_PIN, PASSWORD), True),
                                      ((WRONG_PIN, "not-the-password"), False)):
                result = _pamtester(root, *answers)
                assert (result.returncode == 0) == succeeds, (answers, result.stderr)
            assert '"failures": 2' in _status(root)

            # The installed service, from the installed files, answers as pinutil does.
            asked = root.run(["sh", "-c", _RUN_PINUTILD, "sh", _ASK_PINUTILD], check=False)
            assert asked.returncode == 0, (asked.stdout, asked.stderr)
            reply = json.loads(asked.stdout)
            assert (reply.get("enrolled"), reply.get("failures"), reply.get("locked")) \
                == (True, 2, False), (reply, asked.stderr)

            # Upgrade from a version before the state directory (made so here: its
            # records, salt key record and statoverrides where it kept them): the
            # enrolment moves, the set-gid bit and the overrides go, the master key and
            # the enabled profile stay.
            root.run(["sh", "-c", _AS_BEFORE_THE_STATE_DIR])
            assert _pamtester(root, PIN).returncode != 0  # this version reads only its own
            root.run(["sh", "-c", "apt-get install -y --no-install-recommends /tmp/debs/new-*.deb"])
            for package in PACKAGES:
                assert root.run(["dpkg-query", "-W", "-f", "${Version}", package]).stdout == _version()
            assert '"enrolled": true' in _status(root)
            assert root.run(["pinutil", "master-key", "get-user-token", "alice"]).stdout == token
            assert root.run(["stat", "-c", "%a %U %G", "/usr/bin/pinutil"]).stdout == "755 root root\n"
            assert root.run(["dpkg-statoverride", "--list"], check=False).stdout == ""
            for gone in ("/var/lib/pinpam", "/etc/pinpam/salt_key"):
                assert not os.path.exists(root.path + gone), gone
            uid = root.run(["id", "-u", "alice"]).stdout.strip()
            assert root.run(["stat", "-c", "%a %U %G", f"/var/lib/pinutild/enrolments/{uid}",
                             "/var/lib/pinutild/salt_key"]).stdout \
                == "640 pinutild pinutild\n644 pinutild pinutild\n"
            result = _pamtester(root, PIN)
            assert result.returncode == 0, result.stderr
            assert '"failures": 0' in _status(root)
            assert glob.glob(f"{root.path}/usr/lib/pypam/modules/__pycache__/tpm_pin.*.pyc")
            asked = root.run(["sh", "-c", _RUN_PINUTILD, "sh", _ASK_PINUTILD], check=False)
            assert asked.returncode == 0 and json.loads(asked.stdout)["enrolled"] is True, \
                (asked.stdout, asked.stderr)
        finally:
            tpm.kill()

        # The next Python (a stand-in python3 3.12 package): apt must take our packages
        # away with the pam-auth-update profile, not leave a shim that cannot start.
        next_python = _next_python3_deb(f"{root.path}/tmp/debs")
        plan = root.run(["apt-get", "install", "-s", f"/tmp/debs/{next_python}"]).stdout
        for package in PACKAGES:
            assert re.search(rf"^Remv {package} ", plan, re.MULTILINE), plan

        # Purge: the admin's own files go first (the policy, the test service, the
        # master key's recovery file and its authValue record, which purge keeps on
        # purpose: checked here). The enrolment records and the salt key record go
        # with the package.
        for path in ("/etc/pinpam", "/etc/pam.d/pypam-test"):
            root.run(["rm", "-r", path])
        root.run(["apt-get", "purge", "-y", *PACKAGES])
        assert os.path.exists(f"{root.path}/var/pinpam/sealed_master_key")
        assert sorted(os.listdir(f"{root.path}/var/lib/pinutild")) == ["master_key_auth"]
        root.run(["rm", "-r", "/var/pinpam", "/var/lib/pinutild"])
        assert root.run(["dpkg-statoverride", "--list"], check=False).stdout == ""
        # The system user pinutild stays (Debian keeps system users), and only it.
        accounts_after = _accounts(root)
        for path, lines in accounts_after.items():
            added = sorted(lines - accounts_before[path])
            assert len(added) == 1 and added[0].startswith("pinutild:"), (path, added)
            assert accounts_before[path] <= lines, path
        after = _without_accounts(root.files(VOLATILE))
        before = _without_accounts(before)
        assert sorted(after - before) == [] and sorted(before - after) == []
