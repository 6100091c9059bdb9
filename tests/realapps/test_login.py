"""/bin/login (Debian's shadow `login`, run by root as getty would) with the PIN in front
of Debian's /etc/pam.d/login, on a real pty. login retries on the same PAM handle after
"Login incorrect" (it asks the user name again): one PIN attempt for all its rounds."""
from __future__ import annotations

import pexpect

from tests.realapps.harness import ALICE, BOB, LIMIT, WRONG_PIN, Stopwatch, Transcript

SHELL_MARK = "LOGIN-AS-alice"
LOGIN_PROMPT = "pypam-sandbox login: "


def login(pin_box):
    pin_box.wire("login")
    # As getty leaves it: login leads its own session on the terminal. (util-linux's
    # login, Debian 13's, calls setpgrp() and is stopped by SIGTTOU otherwise.)
    child = pin_box.box.spawn(["setsid", "--ctty", "login", ALICE.name])
    return child, Transcript(child)


def in_shell(child, seen):
    child.sendline("echo LOGIN-AS-$(id -un); exit")
    child.expect(SHELL_MARK)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen


def test_login_wrong_pin_and_wrong_passwords_never_get_in(pin_box):
    child, seen = login(pin_box)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect("Password: ")
    child.sendline(WRONG_PIN)
    child.expect("Login incorrect")
    child.expect(LOGIN_PROMPT)  # login's second round, on the same handle
    child.sendline(ALICE.name)
    child.expect("Password: ")
    child.sendline(BOB.pin)
    child.expect("Login incorrect")
    child.expect(LOGIN_PROMPT)
    child.close(force=True)
    assert seen.text.count("PIN: ") == 1
    assert SHELL_MARK not in seen.text
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (1, 0)


def test_login_another_users_pin_never_gets_in(pin_box):
    child, seen = login(pin_box)
    child.expect("PIN: ")
    child.sendline(BOB.pin)
    child.expect("Password: ")
    child.sendline(BOB.password)
    child.expect("Login incorrect")
    child.close(force=True)
    assert SHELL_MARK not in seen.text
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (1, 0)


def test_login_with_the_pin(pin_box, timing_log):
    watch = Stopwatch()
    child, seen = login(pin_box)
    child.expect("PIN: ")
    watch.mark("prompt")
    child.sendline(ALICE.pin)
    watch.mark("pin_sent")
    child.expect(r"\$ ")
    watch.mark("success")
    in_shell(child, seen)
    assert pin_box.counter(ALICE) == (0, LIMIT)
    timing_log.record("login", watch, "/bin/login run by root, direct backend, Debian stack "
                      "(success = the user's shell prompt)")


def test_login_wrong_pin_then_password(pin_box):
    child, seen = login(pin_box)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect("Password: ")
    child.sendline(ALICE.password)
    child.expect(r"\$ ")
    in_shell(child, seen)
    assert pin_box.failures(ALICE) == 1
