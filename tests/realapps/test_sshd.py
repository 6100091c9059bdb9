"""sshd (Debian's openssh-server) after `pypam enable tpm_pin --preset local --apply`,
which on Debian has pam-auth-update put the PIN line into common-auth (sshd reads it),
in the sandbox's private network, the client (ssh) on a real pty.

A client bound to REMOTE_ADDR (192.0.2.1) is a remote login for PAM (PAM_RHOST =
"192.0.2.1"): no PIN prompt, with keyboard-interactive (every prompt shown) and with
PasswordAuthentication (sshd answers every prompt with the password), and no attempt
spent even by a PIN-shaped password. A client on 127.0.0.1 is remote too (review F12):
any local user can make that connection and name any account, and sshd (root) would
spend that account's attempts; so loopback gets no PIN prompt either."""
from __future__ import annotations

import select
import subprocess
import time

import pexpect
import pytest

from tests.realapps.harness import (
    ALICE,
    LIMIT,
    PYPAM_COMMAND,
    WRONG_PIN,
    Transcript,
)
from tests.support.sandbox import REMOTE_ADDR

PIN_SHAPED_PASSWORD = "24680"
MARK = "SSH-AS-alice"
KBDINT_PROMPT = r"\(alice@[0-9.]+\) Password: "


@pytest.fixture
def sshd(pin_box):
    # --preset local, through pam-auth-update: common-auth holds the PIN line, and
    # sshd reads common-auth (enable refuses to put it in sshd's own file: test below).
    pin_box.wire_common_auth()
    pin_box.box.run(["install", "-d", "-m", "0755", "/run/sshd"])
    server = pin_box.box.popen(
        ["/usr/sbin/sshd", "-D", "-e", "-o", "KbdInteractiveAuthentication=yes",
         "-o", "PasswordAuthentication=yes", "-o", "PubkeyAuthentication=no",
         "-o", "UseDNS=no", "-o", "MaxAuthTries=6"],
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    log = b""
    while b"Server listening on 0.0.0.0" not in log:
        assert time.monotonic() < deadline and server.poll() is None, log
        if select.select([server.stderr], [], [], 0.5)[0]:
            log += server.stderr.read1(4096)
    yield pin_box
    server.kill()
    server.wait()


def ssh(pin_box, method, source=REMOTE_ADDR):
    argv = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"PreferredAuthentications={method}", "-o", "NumberOfPasswordPrompts=1",
            "-o", f"BindAddress={source}", f"{ALICE.name}@{source}", "echo SSH-AS-$(id -un)"]
    child = pin_box.box.spawn(argv)
    return child, Transcript(child)


def finish(child, seen, status):
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status, seen


# ---- remote: no PIN, whatever the client ---------------------------------------------------
def test_remote_pin_never_gets_in(sshd):
    """The PIN typed at the remote password prompt is just a wrong password."""
    child, seen = ssh(sshd, "keyboard-interactive")
    child.expect(KBDINT_PROMPT)
    child.sendline(ALICE.pin)
    child.expect("Permission denied")
    finish(child, seen, 255)
    assert "PIN" not in seen.text and MARK not in seen.text
    assert sshd.counter(ALICE) == (0, LIMIT)


def test_remote_keyboard_interactive_password_no_pin_prompt(sshd):
    child, seen = ssh(sshd, "keyboard-interactive")
    child.expect(KBDINT_PROMPT)
    child.sendline(ALICE.password)
    child.expect(MARK)
    finish(child, seen, 0)
    assert "PIN" not in seen.text
    assert sshd.counter(ALICE) == (0, LIMIT)
    sshd.box.syslog.sync()  # tpm_pin saw the remote host and said why it stayed silent
    assert f"remote login from '{REMOTE_ADDR}'" in sshd.box.syslog.text()


def test_remote_pin_shaped_password_never_spends_an_attempt(sshd):
    """PasswordAuthentication answers every PAM prompt with the password: more logins
    than the PIN's limit, none of them touches the PIN."""
    sshd.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    for _ in range(LIMIT + 1):
        child, seen = ssh(sshd, "password")
        child.expect(r"alice@[0-9.]+'s password: ")
        child.sendline(PIN_SHAPED_PASSWORD)
        child.expect(MARK)
        finish(child, seen, 0)
    assert sshd.counter(ALICE) == (0, LIMIT)


# ---- loopback: remote for tpm_pin (any local user can connect and name alice) ---------
def test_loopback_pin_never_gets_in_nor_spends(sshd):
    """Another local user's `ssh alice@127.0.0.1`: no PIN prompt; the PIN-shaped
    guesses are only wrong passwords, and alice's PIN keeps every attempt."""
    child, seen = ssh(sshd, "keyboard-interactive", source="127.0.0.1")
    child.expect(KBDINT_PROMPT)
    child.sendline(WRONG_PIN)
    child.expect("Permission denied")
    finish(child, seen, 255)
    assert "PIN" not in seen.text and MARK not in seen.text
    assert sshd.counter(ALICE) == (0, LIMIT)


def test_loopback_password_login_no_pin_prompt(sshd):
    child, seen = ssh(sshd, "keyboard-interactive", source="127.0.0.1")
    child.expect(KBDINT_PROMPT)
    child.sendline(ALICE.password)
    child.expect(MARK)
    finish(child, seen, 0)
    assert "PIN" not in seen.text
    assert sshd.counter(ALICE) == (0, LIMIT)
    sshd.box.syslog.sync()
    assert "remote login from '127.0.0.1'" in sshd.box.syslog.text()


def test_loopback_pin_shaped_password_never_spends_an_attempt(sshd):
    """PasswordAuthentication over loopback: more logins than the PIN's limit."""
    sshd.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    for _ in range(LIMIT + 1):
        child, seen = ssh(sshd, "password", source="127.0.0.1")
        child.expect(r"alice@[0-9.]+'s password: ")
        child.sendline(PIN_SHAPED_PASSWORD)
        child.expect(MARK)
        finish(child, seen, 0)
    assert sshd.counter(ALICE) == (0, LIMIT)


def test_enable_refuses_sshd(pin_box):
    # The sandbox's own Debian sshd stack: enable never puts the PIN line there.
    before = pin_box.pam_files()
    done = pin_box.box.run([*PYPAM_COMMAND, "enable", "tpm_pin", "--service", "sshd",
                            "--apply"], check=False)
    assert done.returncode == 2, done
    assert b"REFUSED sshd: a remote service" in done.stdout
    assert pin_box.pam_files() == before
