"""`pypam enable` / `disable` / `status` on copies of real stacks: this machine's own
/etc/pam.d (copied, never touched), Debian 12's display managers and sudo, Fedora's
authselect output and Arch's pambase (tests/stack/data). The refusal rules each have a
test that a stack which would let someone in (or lock someone out) is refused."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys

import pytest

from pypam.stack import apply, enable, parser, proof
from pypam.stack import debian as pam_auth_update
from pypam.stack.modules import assume_present

from .harness import ROOT

DATA = os.path.join(ROOT, "tests", "stack", "data")
PYPAM = [sys.executable, "-m", "pypam"]
#: Debian 12's sudo file as the sandbox and the data have it, with Fedora's and Arch's
#: shapes of the same service (both distributions' sudo packages include system-auth).
FEDORA_SUDO = ("#%PAM-1.0\nauth       include      system-auth\n"
               "account    include      system-auth\npassword   include      system-auth\n"
               "session    optional     pam_keyinit.so revoke\n"
               "session    required     pam_limits.so\nsession    include      system-auth\n")
ARCH_SUDO = ("#%PAM-1.0\nauth\t\tinclude\t\tsystem-auth\naccount\t\tinclude\t\tsystem-auth\n"
             "session\t\tinclude\t\tsystem-auth\n")


def pypam(*args: str, rc: int = 0) -> str:
    done = subprocess.run([*PYPAM, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == rc, (done.returncode, done.stdout, done.stderr)
    return done.stdout + done.stderr


def snapshot(root: str) -> dict[str, tuple[bytes, int, int, int]]:
    """Every pam.d file's bytes, owner, group and mode."""
    out = {}
    pam_d = os.path.join(root, "etc", "pam.d")
    for name in sorted(os.listdir(pam_d)):
        path = os.path.join(pam_d, name)
        st = os.lstat(path)
        with open(path, "rb") as f:
            out[name] = (f.read(), st.st_uid, st.st_gid, st.st_mode)
    return out


def copy_root(tmp_path, source: str) -> str:
    root = str(tmp_path / "root")
    shutil.copytree(source, os.path.join(root, "etc", "pam.d"), symlinks=True)
    return root


@pytest.fixture
def debian(tmp_path) -> str:
    root = copy_root(tmp_path, os.path.join(DATA, "debian12", "etc", "pam.d"))
    # An unusual owner and mode, which disable must give back as they were.
    sudo = os.path.join(root, "etc", "pam.d", "sudo")
    os.chown(sudo, 4321, 4322)
    os.chmod(sudo, 0o640)
    return root


@pytest.fixture
def this_machine(tmp_path) -> str:
    return copy_root(tmp_path, "/etc/pam.d")


def enable_args(root: str, *more: str) -> list[str]:
    return ["enable", "tpm_pin", "--root", root, "--assume-modules", *more]


def test_dry_run_shows_the_diff_and_changes_nothing(debian):
    before = snapshot(debian)
    out = pypam(*enable_args(debian, "--preset", "unlock"))
    assert "+auth  sufficient  pam_pypam.so module=tpm_pin" in out
    assert "proof (" in out and "no new way in" in out
    assert "dry run: nothing written" in out
    assert snapshot(debian) == before
    assert not os.path.exists(os.path.join(debian, apply.STATE_DIR.lstrip("/")))


@pytest.mark.parametrize("preset", ["unlock", "local"])
def test_apply_then_disable_is_byte_identical(debian, preset):
    before = snapshot(debian)
    out = pypam(*enable_args(debian, "--preset", preset, "--apply"))
    assert "written:" in out
    changed = snapshot(debian)
    assert changed["sudo"][0] != before["sudo"][0]
    assert changed["sudo"][1:] == before["sudo"][1:]           # owner, group, mode kept
    sudo = parser.load_service("sudo", root=debian, probe=assume_present)
    assert next(h.args for h in sudo.chain("auth")) == ("module=tpm_pin",)
    assert "as enable wrote it" in pypam("status", "--root", debian)
    out = pypam(*enable_args(debian, "--service", "login", "--apply"), rc=2)  # once only
    assert "run `pypam disable --apply` first" in out
    assert "dry run" in pypam("disable", "--root", debian)
    assert snapshot(debian) == changed
    pypam("disable", "--root", debian, "--apply")
    assert snapshot(debian) == before
    assert "not enabled" in pypam("status", "--root", debian)


def test_this_machines_stacks_round_trip(this_machine):
    before = snapshot(this_machine)
    out = pypam(*enable_args(this_machine, "--preset", "local", "--apply"))
    assert "written:" in out, out
    assert snapshot(this_machine) != before
    pypam("disable", "--root", this_machine, "--apply")
    assert snapshot(this_machine) == before


def test_disable_refuses_over_a_file_changed_since(debian):
    pypam(*enable_args(debian, "--service", "sudo", "--service", "login", "--apply"))
    login = os.path.join(debian, "etc", "pam.d", "login")
    with open(login, "ab") as f:
        f.write(b"auth optional pam_echo.so admin's own line\n")
    changed = snapshot(debian)
    out = pypam("disable", "--root", debian, "--apply", rc=2)
    assert "changed since" in out and "nothing restored" in out
    assert snapshot(debian) == changed                          # not even sudo


def test_remote_services_are_refused(debian):
    before = snapshot(debian)
    out = pypam(*enable_args(debian, "--service", "sshd", "--service", "sudo",
                             "--apply"), rc=2)
    assert "REFUSED sshd: a remote service" in out
    assert snapshot(debian) == before                           # sudo neither


def test_shared_files_are_refused_unless_every_includer_is_named(debian):
    out = pypam(*enable_args(debian, "--service", "common-auth"), rc=2)
    assert "REFUSED common-auth" in out
    out = pypam(*enable_args(debian, "--service", "su"), rc=2)
    assert "REFUSED su: su-l includes it" in out
    out = pypam(*enable_args(debian, "--service", "su", "--service", "su-l"))
    assert "gets the PIN through /etc/pam.d/su" in out


def test_a_keyring_token_after_a_failed_login_is_refused(debian):
    # Debian's gdm-password: `required pam_succeed_if user != root` does not end the
    # stack when it fails, so a master_key line before the keyring would hand root's
    # keyring the token in a login that fails.
    out = pypam(*enable_args(debian, "--service", "gdm-password", "--master-key"), rc=2)
    assert "master_key (the keyring's token) runs in a login that fails" in out
    out = pypam(*enable_args(debian, "--service", "lightdm", "--master-key"))
    assert "+auth  optional  pam_pypam.so module=master_key" in out


def test_fedora_direct_edit(tmp_path):
    root = copy_root(tmp_path, os.path.join(DATA, "fedora-authselect-local", "etc", "pam.d"))
    with open(os.path.join(root, "etc", "pam.d", "sudo"), "w") as f:
        f.write(FEDORA_SUDO)
    before = snapshot(root)
    out = pypam(*enable_args(root, "--service", "sudo", "--apply"))
    assert "written: /etc/pam.d/sudo" in out
    assert snapshot(root)["system-auth"] == before["system-auth"]
    pypam("disable", "--root", root, "--apply")
    assert snapshot(root) == before


def test_arch_faillock_would_be_skipped_by_a_pin_and_is_refused(tmp_path):
    # Arch's system-auth runs pam_faillock preauth before the password: a PIN line in
    # front of `include system-auth` would let a user whom faillock locked out in.
    root = copy_root(tmp_path, os.path.join(DATA, "arch-pambase-20210605", "etc", "pam.d"))
    with open(os.path.join(root, "etc", "pam.d", "sudo"), "w") as f:
        f.write(ARCH_SUDO)
    out = pypam(*enable_args(root, "--service", "sudo"), rc=2)
    assert "a correct PIN gets in where a correct password does not" in out
    assert "pam_faillock" in out


# -- --master-key on a direct edit: the keyring line runs after a PIN -------------------

KEYRING_AUTH = b"auth       optional   pam_gnome_keyring.so\n"


def add_keyring_to_login(root: str) -> None:
    """Debian's login with the keyring's auth line after its password (as
    tests/realapps/test_gnome_keyring.py and the README have it)."""
    path = os.path.join(root, "etc", "pam.d", "login")
    with open(path, "rb") as f:
        data = f.read()
    group = b"auth       optional   pam_group.so\n"
    assert data.count(group) == 1
    with open(path, "wb") as f:
        f.write(data.replace(group, group + KEYRING_AUTH))


def master_key_plan(root: str, service: str) -> enable.ServicePlan:
    (sp,) = enable.plan([service], enable.Options(root=root, probe=assume_present,
                                                  master_key=True))
    return sp


@pytest.mark.parametrize("service", ["login", "lightdm"])
def test_master_key_direct_edit_runs_the_keyring_after_a_pin(debian, service):
    add_keyring_to_login(debian)
    sp = master_key_plan(debian, service)
    assert sp.changes and not sp.refused, sp.refused
    assert sp.proof.ok and sp.proof.keyring_after_pin
    assert "pam_gnome_keyring" not in sp.proof.skipped_after_pin
    after = parser.load_service(service, root=debian, probe=assume_present,
                                locate=lambda p: _bytes_at(p, debian, sp))
    names = [(h.name, h.args) for h in after.chain("auth")]
    token = ("pam_pypam.so", ("module=master_key",))
    keyring = [i for i, (name, _) in enumerate(names) if name == "pam_gnome_keyring.so"]
    assert len(keyring) == 2                    # the PIN's path and the password's
    assert all(names[i - 1] == token for i in keyring)
    before = snapshot(debian)
    out = pypam(*enable_args(debian, "--service", service, "--master-key", "--apply"))
    assert "the keyring line runs after master_key after a correct PIN" in out
    assert "written:" in out
    pypam("disable", "--root", debian, "--apply")
    assert snapshot(debian) == before


def _bytes_at(path: str, root: str, sp: enable.ServicePlan) -> str:
    """A locate() for parser.load_service that reads the plan's new text for its file."""
    if path != sp.path:
        return os.path.join(root, path.lstrip("/"))
    new = os.path.join(root, "planned")
    with open(new, "wb") as f:
        f.write(sp.after)
    return new


#: A jump across the password and the keyring line (system users land on pam_deny).
JUMP_OVER_KEYRING = (b"auth [success=ok default=6] pam_succeed_if.so uid >= 1000 quiet\n"
                     b"@include common-auth\nauth optional pam_gnome_keyring.so\n"
                     b"auth [default=1] pam_permit.so\nauth requisite pam_deny.so\n"
                     b"auth required pam_permit.so\n")


def test_master_key_recounts_a_jump_across_the_pin_path_and_the_keyring(debian):
    with open(os.path.join(debian, "etc", "pam.d", "svc"), "wb") as f:
        f.write(JUMP_OVER_KEYRING)
    sp = master_key_plan(debian, "svc")
    assert sp.proof.ok and sp.proof.keyring_after_pin, sp.refused
    # 6 + the PIN line and its path (8) + master_key before the keyring line (1)
    assert sp.after.startswith(b"auth [success=ok default=15] pam_succeed_if.so")


def test_a_sufficient_pin_before_the_keyring_is_refused_by_the_proof(tmp_path):
    # What enable wrote before: the PIN `sufficient` before the password, master_key
    # before the keyring line. A correct PIN ends the stack: the keyring stays locked.
    before = (b"auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\n"
              b"auth required pam_permit.so\nauth optional pam_gnome_keyring.so\n")
    after = (b"auth sufficient pam_pypam.so module=tpm_pin\n" + before).replace(
        b"auth optional pam_gnome", b"auth optional pam_pypam.so module=master_key\n"
        b"auth optional pam_gnome")
    assert "keyring locked after a PIN" in _rules(_stacks(tmp_path, before, after))


#: Fedora's gdm-password, without its first line (pam_selinux_permit, which the proof
#: takes to succeed: it would end the stack before the password).
FEDORA_GDM = ("auth        substack      system-auth\n"
              "auth        optional      pam_gnome_keyring.so\n"
              "account     include       system-auth\n"
              "session     include       system-auth\n"
              "session     optional      pam_gnome_keyring.so auto_start\n")


def test_fedora_master_key_after_a_substack_password_is_refused(tmp_path):
    # Fedora brings the password in with `substack`: after a failed password the
    # substack ends and the keyring line still runs, so master_key before it would hand
    # the keyring the token in a failed login. No edit of this file can avoid that:
    # refused, with the alternatives named, nothing written.
    root = copy_root(tmp_path, os.path.join(DATA, "fedora-authselect-local", "etc", "pam.d"))
    with open(os.path.join(root, "etc", "pam.d", "gdm-password"), "w") as f:
        f.write(FEDORA_GDM)
    before = snapshot(root)
    out = pypam(*enable_args(root, "--service", "gdm-password", "--master-key", "--apply"),
                rc=2)
    assert "master_key (the keyring's token) runs in a login that fails" in out
    assert "--preset local --master-key" in out and "pypam-decide" in out
    assert snapshot(root) == before
    out = pypam(*enable_args(root, "--service", "gdm-password"))   # without: fine
    assert "no new way in" in out
    # An include after the password: the PIN's jump would count another file's lines.
    with open(os.path.join(root, "etc", "pam.d", "postlogin"), "w") as f:
        f.write("auth optional pam_echo.so hello\n")
    with open(os.path.join(root, "etc", "pam.d", "gdm-password"), "a") as f:
        f.write("auth        include       postlogin\n")
    out = pypam(*enable_args(root, "--service", "gdm-password", "--master-key"), rc=2)
    assert "an include after the password" in out and "pypam-decide" in out


def test_arch_master_key_is_refused(tmp_path):
    # Arch's login path runs pam_faillock before the password: refused as without
    # --master-key (a PIN would skip faillock), nothing written.
    root = copy_root(tmp_path, os.path.join(DATA, "arch-pambase-20210605", "etc", "pam.d"))
    with open(os.path.join(root, "etc", "pam.d", "lightdm"), "w") as f:
        f.write("auth include system-login\n-auth optional pam_gnome_keyring.so\n"
                "account include system-login\nsession include system-login\n")
    before = snapshot(root)
    out = pypam(*enable_args(root, "--service", "lightdm", "--master-key", "--apply"), rc=2)
    assert "REFUSED lightdm" in out and "pam_faillock" in out
    assert snapshot(root) == before


def test_a_failed_check_after_the_password_refuses_the_master_key(debian):
    # A check between the password and the keyring that can fail (required): master_key
    # would run in a login that fails (after the PIN as after the password): refused,
    # with the alternatives named.
    path = os.path.join(debian, "etc", "pam.d", "lightdm")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data.replace(b"@include common-auth\n", b"@include common-auth\n"
                             b"auth required pam_succeed_if.so user ingroup staff\n"))
    out = pypam(*enable_args(debian, "--service", "lightdm", "--master-key"), rc=2)
    assert "master_key (the keyring's token) runs in a login that fails" in out
    assert "--preset local --master-key" in out


# -- the proof's rules, each against a stack that breaks it ---------------------------

JUMPY = (b"auth [success=ok default=1] pam_succeed_if.so uid >= 1000 quiet\n"
         b"auth [success=1 default=ignore] pam_unix.so\n"
         b"auth requisite pam_deny.so\n"
         b"auth required pam_permit.so\n")


def _stacks(tmp_path, before: bytes, after: bytes):
    stacks = []
    for data in (before, after):          # the same path: lines keep their file name
        (tmp_path / "svc").write_bytes(data)
        stacks.append(parser.load_service("svc", confdir=str(tmp_path), probe=assume_present))
    keys = proof.keys_of(stacks[1])
    pin = {keys[h.ident] for h in stacks[1].chain("auth") if "module=tpm_pin" in h.args}
    master = {keys[h.ident] for h in stacks[1].chain("auth") if "module=master_key" in h.args}
    before_keys = proof.keys_of(stacks[0])
    password = {before_keys[h.ident] for h in stacks[0].chain("auth")
                if h.name == "pam_unix.so"}
    return proof.prove(stacks[0], stacks[1], pin, password, master)


def _rules(result: proof.Proof) -> set[str]:
    return {v.rule for v in result.violations}


def test_an_uncounted_jump_is_a_new_way_in(tmp_path):
    # System users (uid < 1000) skip pam_unix onto pam_deny. A PIN line inserted before
    # pam_unix without re-counting makes them skip only the PIN: pam_unix then lets
    # them in with a password that never worked here before.
    pin = b"auth sufficient pam_pypam.so module=tpm_pin\n"
    lines = JUMPY.splitlines(keepends=True)
    naive = lines[0] + pin + b"".join(lines[1:])
    assert "new way in" in _rules(_stacks(tmp_path, JUMPY, naive))


def test_enable_recounts_a_jump_across_the_pin_line(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "etc", "pam.d"))
    with open(os.path.join(root, "etc", "pam.d", "svc"), "wb") as f:
        f.write(JUMPY)
    plans = enable.plan(["svc"], enable.Options(root=root, probe=assume_present))
    assert plans[0].changes and plans[0].proof.ok, plans[0].refused
    assert b"[success=ok default=2] pam_succeed_if.so" in plans[0].after
    assert any("re-counted" in n for n in plans[0].notes)


def test_a_pin_line_that_does_not_end_the_stack_is_refused(tmp_path):
    before = b"auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\n" \
             b"auth required pam_permit.so\n"
    after = b"auth [success=ok default=ignore] pam_pypam.so module=tpm_pin\n" + before
    assert "pin refused" in _rules(_stacks(tmp_path, before, after))


def test_a_pin_line_that_fails_when_unavailable_is_refused(tmp_path):
    before = b"auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\n" \
             b"auth required pam_permit.so\n"
    after = b"auth [success=done default=die] pam_pypam.so module=tpm_pin\n" + before
    assert "unavailable" in _rules(_stacks(tmp_path, before, after))


def test_a_pin_that_skips_a_second_factor_is_refused(tmp_path):
    before = b"auth required pam_unix.so\nauth required pam_u2f.so\n"
    after = b"auth sufficient pam_pypam.so module=tpm_pin\n" + before
    assert "more than the password" in _rules(_stacks(tmp_path, before, after))


def test_the_unchanged_stack_proves_clean(tmp_path):
    before = b"auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\n" \
             b"auth required pam_permit.so\n"
    after = b"auth sufficient pam_pypam.so module=tpm_pin\n" + before
    assert _stacks(tmp_path, before, after).ok


# -- a crash in the middle of --apply ----------------------------------------------------

CRASH = """
import os, signal, sys
from pypam.stack import apply, cli
written, real_write = [], apply.atomic_write
def write(real, data, *rest):
    real_write(real, data, *rest)
    if "/etc/pam.d/" in real:
        written.append(real)
        if len(written) == {"after-first-file": 1, "before-record": 2}[sys.argv[1]]:
            os.kill(os.getpid(), signal.SIGKILL)
apply.atomic_write = write
cli.main(sys.argv[2:])
"""


@pytest.mark.parametrize("stop", ["after-first-file", "before-record"])
def test_a_killed_apply_leaves_a_state_disable_repairs(debian, stop):
    before = snapshot(debian)
    done = subprocess.run([sys.executable, "-c", CRASH, stop,
                           *enable_args(debian, "--service", "sudo", "--service", "login",
                                        "--apply")],
                          check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert snapshot(debian) != before
    status = pypam("status", "--root", debian)
    assert "pending" in status and "interrupted" in status
    pypam(*enable_args(debian, "--service", "sudo", "--apply"), rc=2)   # not on top
    pypam("disable", "--root", debian, "--apply")
    assert snapshot(debian) == before
    leftovers = [n for n in os.listdir(os.path.join(debian, "etc", "pam.d"))
                 if n.startswith(".")]
    assert not leftovers


def test_the_record_keeps_hashes_and_backups(debian):
    pypam(*enable_args(debian, "--service", "sudo", "--apply"))
    record = apply.State(debian).load()
    (entry,) = record["files"]
    with open(os.path.join(DATA, "debian12", "etc", "pam.d", "sudo"), "rb") as f:
        assert entry["before"] == hashlib.sha256(f.read()).hexdigest()
    assert (entry["uid"], entry["gid"], entry["mode"]) == (4321, 4322, 0o640)
    assert record["state"] == "applied"


# -- --preset local on Debian: pam-auth-update ---------------------------------------------

def debian_root(tmp_path) -> str:
    """This machine's pam-auth-update state (pam.d, /var/lib/pam, debconf, profiles),
    copied, with our profile installed as `make install` does."""
    root = str(tmp_path / "root")
    for tree in pam_auth_update.TREES:
        shutil.copytree(tree, os.path.join(root, tree.lstrip("/")), symlinks=True)
    shutil.copy(os.path.join(ROOT, "debian", "pam-configs", pam_auth_update.PROFILE),
                os.path.join(root, "usr", "share", "pam-configs"))
    return root


def test_local_preset_goes_through_pam_auth_update_and_back(tmp_path):
    root = debian_root(tmp_path)
    with open("/etc/pam.d/common-auth", "rb") as f:
        host = f.read()
    before = snapshot(root)
    out = pypam(*enable_args(root, "--preset", "local"))
    assert "=== pam-auth-update --enable pypam-tpm-pin" in out
    assert "+auth\t[success=2 default=ignore]\tpam_pypam.so module=tpm_pin" in out
    assert "REFUSED" not in out and "no new way in" in out
    assert snapshot(root) == before                             # the dry run wrote nothing
    out = pypam(*enable_args(root, "--preset", "local", "--apply"))
    assert "written: /etc/pam.d/common-auth (common-* by pam-auth-update" in out
    login = parser.load_service("login", root=root, probe=assume_present)
    assert "module=tpm_pin" in [a for h in login.chain("auth") for a in h.args]
    assert "pam-auth-update --disable" in pypam("disable", "--root", root, "--apply")
    assert snapshot(root) == before
    with open("/etc/pam.d/common-auth", "rb") as f:
        assert f.read() == host                                 # the machine's own: untouched


def test_local_preset_without_the_profile_edits_files_directly(tmp_path):
    root = debian_root(tmp_path)
    os.unlink(os.path.join(root, "usr", "share", "pam-configs", pam_auth_update.PROFILE))
    out = pypam(*enable_args(root, "--preset", "local"))
    assert "not through pam-auth-update (the profile" in out
    assert "=== login (/etc/pam.d/login)" in out


def test_local_preset_with_the_master_key_keeps_the_keyring_after_a_pin(tmp_path):
    # A login with a keyring line after common-auth (as the display managers have it):
    # the PIN jumps inside common-auth, so master_key and the keyring run after a
    # correct PIN too, and never after a failure (rule 4).
    root = debian_root(tmp_path)
    with open(os.path.join(root, "etc", "pam.d", "login"), "a") as f:
        f.write("auth optional pam_gnome_keyring.so\n")
    before = snapshot(root)
    out = pypam(*enable_args(root, "--preset", "local", "--master-key", "--apply"))
    assert "+auth  optional  pam_pypam.so module=master_key" in out
    assert "master_key runs only in logins that succeed" in out
    login = parser.load_service("login", root=root, probe=assume_present)
    names = [h.name for h in login.chain("auth")]
    assert names.index("pam_pypam.so") < names.index("pam_gnome_keyring.so")
    pypam("disable", "--root", root, "--apply")
    assert snapshot(root) == before
