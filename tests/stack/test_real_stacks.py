"""`pypam stack explain` and `check` on real stacks: this machine's /etc/pam.d (read
only), Debian 12's display managers, sudo and sshd, Arch's pambase, Fedora's authselect
output (tests/stack/data/SOURCES.md names each file's source), our known-bad stacks and
the shipped examples/pam.d."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from .harness import ROOT

DATA = os.path.join(ROOT, "tests", "stack", "data")
PYPAM = [sys.executable, "-m", "pypam"]


def pypam(*args: str, check_rc: tuple[int, ...] = (0, 1, 2)) -> subprocess.CompletedProcess:
    done = subprocess.run([*PYPAM, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in check_rc, (done.returncode, done.stdout, done.stderr)
    return done


def findings(*args: str) -> list[dict]:
    return json.loads(pypam("stack", "check", "--json", *args).stdout)


def services(root: str) -> list[str]:
    return sorted(os.listdir(os.path.join(root, "etc", "pam.d")))


@pytest.mark.parametrize("root", ["debian12", "arch-pambase-20210605", "fedora-authselect-local"])
def test_real_distribution_stacks_explain_and_have_no_errors(root):
    where = os.path.join(DATA, root)
    for service in services(where):
        data = json.loads(pypam("stack", "explain", service, "--root", where,
                                "--assume-modules", "--json", check_rc=(0,)).stdout)
        assert "error" not in data, (service, data.get("error"))
        for stage in data["stages"]:
            assert stage["outcomes"], (service, stage["stage"])
    errors = [f for f in findings("--root", where, "--assume-modules")
              if f["severity"] == "error"]
    assert errors == []


def test_arch_system_login_succeeds_only_through_a_credential():
    data = json.loads(pypam("stack", "explain", "system-login", "--stage", "auth", "--root",
                            os.path.join(DATA, "arch-pambase-20210605"), "--assume-modules",
                            "--json").stdout)
    success = [o for o in data["stages"][0]["outcomes"] if o["result"] == "success"]
    assert success and all("pam_unix succeeds" in way or "pam_systemd_home succeeds" in way
                           for way in success[0]["when"])


def test_vlock_has_no_service_file_on_debian_and_falls_back_to_other():
    # Debian's `other` @includes the common-* files: vlock asks for the password.
    data = json.loads(pypam("stack", "explain", "vlock", "--stage", "auth", "--root",
                            os.path.join(DATA, "debian12"), "--assume-modules",
                            "--json").stdout)
    stage = data["stages"][0]
    assert stage["from_other"] is True
    outcomes = {o["result"]: o["when"] for o in stage["outcomes"]}
    assert outcomes["success"] == ["pam_unix succeeds"]


KNOWN_BAD = {
    "common-auth-inserted": ("error", 3, "lands on pam_deny"),
    "optional-only": ("error", 3, "anyone gets in"),
    "master-key-after-substack": ("error", 4, "master_key runs after a failed login"),
    "bad-jump": ("error", 2, "jumps past the end"),
    "include-sufficient": ("warning", 3, "use 'substack'"),
}


@pytest.mark.parametrize("service", sorted(KNOWN_BAD))
def test_each_known_bad_stack_is_flagged_at_its_line(service):
    severity, line, words = KNOWN_BAD[service]
    found = findings(service, "--root", os.path.join(DATA, "known-bad"), "--assume-modules")
    assert any(f["severity"] == severity and f["line"] == line and words in f["message"]
               and f["file"] == f"/etc/pam.d/{service}" for f in found), found
    rc = pypam("stack", "check", service, "--root", os.path.join(DATA, "known-bad"),
               "--assume-modules").returncode
    assert rc == {"error": 2, "warning": 1}[severity]


def test_the_shipped_example_stack_is_clean(tmp_path):
    pam_d = tmp_path / "etc" / "pam.d"
    pam_d.mkdir(parents=True)
    for name in ("login", "pypam-decide"):
        shutil.copy(os.path.join(ROOT, "examples", "pam.d", name), pam_d / name)
    for name in os.listdir(os.path.join(DATA, "debian12", "etc", "pam.d")):
        if name.startswith("common-") or name == "other":
            shutil.copy(os.path.join(DATA, "debian12", "etc", "pam.d", name), pam_d / name)
    found = findings("login", "--root", str(tmp_path), "--assume-modules")
    assert [f for f in found if f["severity"] != "info"] == []
    data = json.loads(pypam("stack", "explain", "login", "--stage", "auth", "--root",
                            str(tmp_path), "--assume-modules", "--json").stdout)
    outcomes = {o["result"]: o["when"] for o in data["stages"][0]["outcomes"]}
    assert any("tpm_pin succeeds" in w for w in outcomes["success"])
    assert any("tpm_pin fails" in w and "pam_unix succeeds" in w for w in outcomes["success"])
    runs = {r["name"]: r["runs_when"] for r in data["stages"][0]["runs"]}
    assert runs["master_key"] == ["success"]
    assert set(runs["pam_gnome_keyring"]) > {"success"}


def test_this_machines_pam_d_is_explained_and_checked_read_only():
    before = {n: os.stat(os.path.join("/etc/pam.d", n)).st_mtime_ns
              for n in os.listdir("/etc/pam.d")}
    for service in sorted(before):
        data = json.loads(pypam("stack", "explain", service, "--json", check_rc=(0,)).stdout)
        assert data["service"] == service
    findings()
    after = {n: os.stat(os.path.join("/etc/pam.d", n)).st_mtime_ns
             for n in os.listdir("/etc/pam.d")}
    assert before == after
