"""The real gnome-keyring behind the master key: /bin/login on a pty, Debian's
pam_gnome_keyring and gnome-keyring-daemon, a user session bus (keyring_session.py).

Three stacks give the keyring the token after a PIN login and after a password login,
and never after a failed one; all three are in the README's walk-through:

- `pypam enable tpm_pin --preset local --master-key --apply` on Debian (through
  pam-auth-update: the PIN jumps inside common-auth, master_key goes before login's
  keyring line), after the keyring lines were added to Debian's login;
- by hand, the documented shape (examples/pam.d/login and pypam-decide): Debian's
  /etc/pam.d/login with its `@include common-auth` replaced by

      auth  substack  pypam-decide          # PIN or password, then master_key
      auth  optional  pam_gnome_keyring.so

  and `session optional pam_gnome_keyring.so auto_start` after common-session.

- `pypam enable tpm_pin --service login --master-key --apply` (a direct edit): the PIN
  line jumps to the password unless the PIN is correct; a correct PIN runs a copy of
  login's auth lines after the password (master_key before the keyring) and ends the
  stack there.

Debian's libpam-gnome-keyring adds the keyring to common-password only (its
pam-auth-update profile); the auth and session lines go into the service, as the
display managers' files have them.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pexpect
import pytest

from tests.realapps.harness import (
    ALICE,
    BOB,
    PYPAM_COMMAND,
    WRONG_PIN,
    PinBox,
    Stopwatch,
    Transcript,
)
from tests.realapps.keyring_session import KEYRING_PACKAGES, KeyringSession
from tests.support.pamhost import PAM_PYPAM_SO
from tests.support.pin_env import ROOT
from tests.support.sandbox import PACKAGES, Sandbox, package_layer

SECRET = "the secret stored before any of this"
SHELL_MARK = "LOGIN-AS-alice"
LOGIN_PROMPT = "pypam-sandbox login: "
REKEY = os.path.join(ROOT, "tools", "pypam-keyring-rekey")
REKEY_INSIDE = "/usr/local/sbin/pypam-keyring-rekey"
KEYRING_AUTH = "auth       optional   pam_gnome_keyring.so"
KEYRING_SESSION = "session    optional   pam_gnome_keyring.so auto_start"
MASTER_KEY = f"auth       optional   {PAM_PYPAM_SO} module=master_key"


@pytest.fixture(scope="session")
def keyring_layer() -> str:
    return package_layer((*PACKAGES, *KEYRING_PACKAGES))


@pytest.fixture
def box(keyring_layer, syslog_capture):
    sandbox = Sandbox(keyring_layer, syslog_capture)
    try:
        yield sandbox
    finally:
        sandbox.close()


@pytest.fixture
def keyring(box, swtpm) -> KeyringSession:
    """Two enrolled users (harness.PinBox), a master key, alice's session bus."""
    pin_box = PinBox(box, swtpm)
    box.run(["pinutil", "--yes", "--json", "master-key", "init"])
    status = box.run(["pinutil", "master-key", "status"]).stdout.decode()
    assert "master key in TPM (0x81000081): present" in status, status
    session = KeyringSession(pin_box, ALICE.name, ALICE.uid)
    shutil.copyfile(REKEY, box.path(REKEY_INSIDE))
    os.chmod(box.path(REKEY_INSIDE), 0o755)
    return session


def token(box: Sandbox) -> str:
    """alice's token, asked of pinutil as root (what master_key computes)."""
    done = box.run(["pinutil", "--json", "master-key", "get-user-token", ALICE.name])
    return json.loads(done.stdout)["token"]


# -- stacks -----------------------------------------------------------------------------
def decide_file(master_key: bool = True) -> str:
    """examples/pam.d/pypam-decide with the module named by its path (master_key's
    line left out for the control stack)."""
    with open(os.path.join(ROOT, "examples", "pam.d", "pypam-decide")) as f:
        lines = f.read().replace("pam_pypam.so", PAM_PYPAM_SO).splitlines()
    return "".join(f"{line}\n" for line in lines
                   if master_key or "module=master_key" not in line)


def wire(box: Sandbox, master_key_after_substack: bool = False) -> None:
    """Debian's login with the decide substack and the keyring lines (module doc).
    `master_key_after_substack`: the misplacement the README warns about (master_key
    between the substack and the keyring line), for the control test."""
    box.write("/etc/pam.d/pypam-decide", decide_file(not master_key_after_substack))
    auth = ["auth       substack   pypam-decide"]
    if master_key_after_substack:
        auth.append(MASTER_KEY)
    login = box.read("/etc/pam.d/login")
    assert login.count("@include common-auth\n") == 1
    login = login.replace("@include common-auth\n", "\n".join([*auth, KEYRING_AUTH]) + "\n")
    box.write("/etc/pam.d/login", login + KEYRING_SESSION + "\n")


def stack_check(box: Sandbox) -> tuple[int, str]:
    """`pypam stack check login` on the sandbox's files (the README's check)."""
    done = box.run([*PYPAM_COMMAND, "stack", "check", "login"], check=False)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


def add_keyring_lines(box: Sandbox) -> None:
    """Debian's login with only the keyring lines added (what a user does to have the
    keyring unlocked at a console login)."""
    login = box.read("/etc/pam.d/login")
    group = "auth       optional   pam_group.so\n"
    assert login.count(group) == 1
    login = login.replace(group, group + KEYRING_AUTH + "\n") + KEYRING_SESSION + "\n"
    box.write("/etc/pam.d/login", login)


# -- /bin/login on a pty ------------------------------------------------------------------
def start_login(box: Sandbox, keep_env: KeyringSession | None = None):
    """login as getty runs it. `keep_env`: `login -p` with the session's
    XDG_RUNTIME_DIR in its environment, as a locker inside the session has it: then
    pam_gnome_keyring finds the running daemon during auth and unlocks it there."""
    argv = ["setsid", "--ctty", "login", ALICE.name]
    if keep_env is not None:
        argv = [*keep_env.env, "setsid", "--ctty", "login", "-p", ALICE.name]
    child = box.spawn(argv)
    return child, Transcript(child)


def log_out(child, seen) -> None:
    child.sendline("echo LOGIN-AS-$(id -un); exit")
    child.expect(SHELL_MARK)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen


def pin_login(box: Sandbox, watch: Stopwatch | None = None):
    """A PIN login up to the shell prompt; the child is left in the shell."""
    child, seen = start_login(box)
    child.expect("PIN: ")
    if watch:
        watch.mark("prompt")
    child.sendline(ALICE.pin)
    if watch:
        watch.mark("pin_sent")
    child.expect(r"\$ ")
    if watch:
        watch.mark("success")
    return child, seen


def password_login(box: Sandbox):
    """Enter at the PIN prompt, then the password, up to the shell prompt."""
    child, seen = start_login(box)
    child.expect("PIN: ")
    child.sendline("")  # straight to the password, no PIN attempt spent
    child.expect("Password: ")
    child.sendline(ALICE.password)
    child.expect(r"\$ ")
    return child, seen


# -- the keyring follows the login --------------------------------------------------------
def test_pin_login_unlocks_the_keyring_keyed_to_the_token(keyring, timing_log):
    keyring.create_keyring(token(keyring.box), SECRET)
    wire(keyring.box)
    # The README's checks of this stack.
    status, report = stack_check(keyring.box)
    assert status == 0 and "error" not in report, report
    explained = keyring.pin_box.pypam("stack", "explain", "login", "--stage", "auth")
    assert "master_key runs only when the result is success." in explained
    assert keyring.locked()  # the oracle's control: a daemon without a login is locked
    keyring.stop_daemon()
    watch = Stopwatch()
    child, seen = pin_login(keyring.box, watch)
    assert not keyring.locked()
    assert keyring.lookup() == SECRET
    log_out(child, seen)
    timing_log.record("login+gnome-keyring", watch,
                      "/bin/login, decide substack with master_key, pam_gnome_keyring "
                      "auto_start (success = the shell prompt, the keyring unlocked)")


def test_password_login_unlocks_the_keyring_keyed_to_the_token(keyring):
    keyring.create_keyring(token(keyring.box), SECRET)
    wire(keyring.box)
    child, seen = password_login(keyring.box)
    assert not keyring.locked()
    assert keyring.lookup() == SECRET
    log_out(child, seen)


def test_the_keyring_does_not_open_with_the_password_once_keyed_to_the_token(keyring):
    """Control: without master_key in the stack, the same password login leaves the
    token's keyring locked: what unlocks it above is the token."""
    keyring.create_keyring(token(keyring.box), SECRET)
    wire(keyring.box)
    keyring.box.write("/etc/pam.d/pypam-decide", decide_file(master_key=False))
    child, seen = password_login(keyring.box)
    assert keyring.locked()
    log_out(child, seen)


def failed_login(keyring: KeyringSession) -> str:
    """Wrong PIN and wrong passwords against a running, locked daemon, with the
    daemon's control socket known during auth (login -p); the transcript."""
    keyring.start_daemon()  # locked
    assert keyring.locked()
    child, seen = start_login(keyring.box, keep_env=keyring)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect("Password: ")
    child.sendline("not alice's password")
    child.expect("Login incorrect")
    child.expect(LOGIN_PROMPT)  # the second round, on the same handle
    child.sendline(ALICE.name)
    child.expect("Password: ")
    child.sendline(ALICE.pin)
    child.expect("Login incorrect")
    child.expect(LOGIN_PROMPT)
    child.close(force=True)
    assert SHELL_MARK not in seen.text
    return seen.text


def test_a_failed_login_never_unlocks_the_keyring(keyring, syslog_capture):
    keyring.create_keyring(token(keyring.box), SECRET)
    wire(keyring.box)
    failed_login(keyring)
    assert keyring.locked()
    syslog_capture.sync()
    # pam_gnome_keyring did reach the daemon during auth (with what it was given)
    assert "gkr-pam: the password for the login keyring was invalid." in \
        syslog_capture.messages()


def test_control_master_key_after_the_substack_unlocks_on_a_failed_login(keyring):
    """The placement examples/pam.d/README.md warns about: lines after a substack run
    even when it failed, so master_key there hands the keyring the token in a failed
    login. This shows the test above can fail."""
    keyring.create_keyring(token(keyring.box), SECRET)
    wire(keyring.box, master_key_after_substack=True)
    failed_login(keyring)
    assert not keyring.locked()
    status, report = stack_check(keyring.box)  # and the stack check says so
    assert status != 0 and "master_key" in report and "error" in report, report


# -- re-keying a keyring that opens with the password -------------------------------------
CURRENT_PROMPT = "Current password of alice's login keyring: "


def sudo_rekey(child, prompt: str, *args: str) -> None:
    """alice types `sudo pypam-keyring-rekey ARGS` in her shell (and her password, if
    sudo asks: it remembers her for a while), up to the tool's first `prompt`."""
    child.sendline(" ".join(["sudo", os.path.basename(REKEY_INSIDE), *args]))
    if child.expect([r"\[sudo\] password for alice: ", prompt]) == 0:
        child.sendline(ALICE.password)
        child.expect(prompt)


def test_rekey_through_sudo_then_a_pin_login_opens_the_old_keyring(keyring):
    """alice's keyring was made by password logins. She logs in with her PIN (it stays
    locked: the token does not open it), runs `sudo pypam-keyring-rekey` in her shell,
    and from then on a PIN login opens it, old secrets intact. `--undo` gives it back
    its password."""
    box = keyring.box
    keyring.create_keyring(ALICE.password, SECRET)
    wire(box)
    child, seen = pin_login(box)
    assert keyring.locked()
    sudo_rekey(child, CURRENT_PROMPT)
    child.sendline("not the keyring's password")
    child.expect(r"does not open alice's login keyring; nothing changed")
    child.expect(r"\$ ")
    sudo_rekey(child, CURRENT_PROMPT)
    child.sendline(ALICE.password)
    child.expect("alice's login keyring now opens with the master-key token")
    child.expect(r"\$ ")
    log_out(child, seen)
    assert ALICE.password not in seen.text  # read without echo
    assert token(box) not in seen.text
    keyring.stop_daemon()

    child, seen = pin_login(box)
    assert not keyring.locked()
    assert keyring.lookup() == SECRET
    # Undo, in the same session: the new password is asked twice.
    sudo_rekey(child, r"New password of alice's login keyring \(the login password\): ",
               "--undo")
    child.sendline(ALICE.password)
    child.expect("Again: ")
    child.sendline(ALICE.password)
    child.expect("alice's login keyring now opens with its login password")
    child.expect(r"\$ ")
    log_out(child, seen)
    assert ALICE.password not in seen.text
    # The password opens it again (as pam_gnome_keyring would start the daemon).
    keyring.stop_daemon()
    keyring.start_daemon(ALICE.password)
    assert not keyring.locked()
    assert keyring.lookup() == SECRET


FOREIGN_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=/run/foreign-bus/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def foreign_bus(box: Sandbox) -> str:
    """A session bus run by bob that lets any user connect (a bus that would hand
    its owner whatever is sent to it); its address."""
    box.run(["install", "-d", "-m", "0755", "-o", BOB.name, "/run/foreign-bus"])
    box.write("/run/foreign-bus.conf", FOREIGN_BUS_CONFIG)
    daemon = box.popen(["dbus-daemon", "--config-file=/run/foreign-bus.conf", "--nofork",
                        "--print-address"], user=BOB.name, stdout=subprocess.PIPE)
    address = daemon.stdout.readline().decode().split(",")[0]
    assert address == "unix:path=/run/foreign-bus/bus", address
    return address


def test_rekey_refuses_without_root_without_a_user_and_with_a_wrong_password(keyring):
    box = keyring.box
    keyring.create_keyring(ALICE.password, SECRET)
    keyring.start_daemon(ALICE.password)  # unlocked: the daemon still checks the password
    assert not keyring.locked()
    attempts = [
        ({"user": ALICE.name}, ["--user", ALICE.name, "--stdin"], ALICE.password,
         "run it as root"),
        ({}, ["--stdin"], ALICE.password, "whose keyring?"),
        ({}, ["--user", ALICE.name, "--stdin"], "wrong", "the password given does not open"),
        ({}, ["--user", ALICE.name, "--stdin", "--undo"], "x",
         "the master-key token (is the keyring re-keyed?) does not open"),
        ({}, ["--user", "bob", "--stdin"], "x", "no session bus of bob"),
        ({}, ["--user", ALICE.name, "--stdin", "--pinutil", "/bin/false"], ALICE.password,
         "pinutil gave no token"),
        # Through sudo (the environment sudo gives): only the caller's own keyring,
        # with the defaults (else --undo sets bob's password, --pinutil runs anything).
        ({"sudo": ALICE.name}, ["--user", BOB.name, "--undo", "--stdin"], "x",
         "--user through sudo: alice may re-key only their own keyring"),
        ({"sudo": ALICE.name}, ["--stdin", "--pinutil", "/bin/true"], ALICE.password,
         "--pinutil through sudo"),
        ({"sudo": ALICE.name}, ["--stdin", "--bus", keyring.bus], ALICE.password,
         "--bus through sudo"),
        # A bus that accepts alice's connection but is bob's: no secret goes there.
        ({}, ["--user", ALICE.name, "--stdin", "--bus", foreign_bus(box)], ALICE.password,
         f"is not alice's own (its server runs as uid {BOB.uid})"),
    ]
    for how, args, line, message in attempts:
        argv = [REKEY_INSIDE, *args]
        if "sudo" in how:
            argv = ["env", f"SUDO_USER={how.pop('sudo')}", *argv]
        done = box.run(argv, input=line + "\n", check=False, **how)
        assert done.returncode == 1, (args, done.stderr)
        assert message in done.stderr.decode(), done.stderr
        assert b"nothing changed" in done.stderr
    keyring.stop_daemon()
    keyring.start_daemon(ALICE.password)  # unchanged: the password still opens it
    assert not keyring.locked()
    assert keyring.lookup() == SECRET


# -- pypam enable --master-key -------------------------------------------------------------
def enable_service_login(pin_box: PinBox) -> None:
    """`pypam enable tpm_pin --service login --master-key --apply`, after a snapshot of
    pam.d for `unwire()` (pypam disable --apply must restore it byte for byte)."""
    pin_box.before_enable = pin_box.pam_files()
    out = pin_box.pypam("enable", "tpm_pin", "--service", "login", "--master-key",
                        "--module-path", PAM_PYPAM_SO, "--apply")
    assert "written:" in out, out
    assert re.search(r"module=master_key\n" + re.escape(KEYRING_AUTH),
                     pin_box.box.read("/etc/pam.d/login"))


def test_pypam_enable_master_key_a_password_login_unlocks_and_disable_restores(keyring):
    box = keyring.box
    keyring.create_keyring(token(box), SECRET)
    add_keyring_lines(box)
    enable_service_login(keyring.pin_box)
    child, seen = password_login(box)
    assert not keyring.locked()
    log_out(child, seen)
    keyring.pin_box.unwire()


def test_pypam_enable_preset_local_master_key_opens_the_keyring_after_pin_or_password(
        keyring):
    """On Debian, `pypam enable tpm_pin --preset local --master-key` puts the PIN inside
    common-auth (pam-auth-update; it jumps over the password there) and master_key
    before login's keyring line: the keyring runs after a correct PIN as after the
    password, and a failed login ends in common-auth's pam_deny before it."""
    box = keyring.box
    keyring.create_keyring(token(box), SECRET)
    add_keyring_lines(box)
    keyring.pin_box.wire_common_auth("--master-key")
    assert re.search(r"module=master_key\n" + re.escape(KEYRING_AUTH),
                     box.read("/etc/pam.d/login"))
    for log_in in (pin_login, password_login):
        child, seen = log_in(box)
        assert not keyring.locked(), log_in.__name__
        assert keyring.lookup() == SECRET
        log_out(child, seen)
        keyring.stop_daemon()
    failed_login(keyring)
    assert keyring.locked()
    keyring.pin_box.unwire()  # pypam disable --apply: every pam.d file as before


def test_pypam_enable_master_key_a_pin_login_unlocks(keyring):
    """The direct edit: after a correct PIN the keyring gets the token and opens; a
    failed login leaves it locked; disable restores pam.d."""
    box = keyring.box
    keyring.create_keyring(token(box), SECRET)
    add_keyring_lines(box)
    enable_service_login(keyring.pin_box)
    child, seen = pin_login(box)
    assert not keyring.locked()
    assert keyring.lookup() == SECRET
    log_out(child, seen)
    keyring.stop_daemon()
    failed_login(keyring)
    assert keyring.locked()
    keyring.pin_box.unwire()
