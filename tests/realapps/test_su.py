"""su (util-linux, set-uid root) with the PIN in front of Debian's /etc/pam.d/su, on a
real pty. su authenticates the TARGET user; through the set-gid helper a PIN is checked
only for the caller's own account (root excepted), so `su alice` by alice takes her PIN
and `su root` / `su bob` by alice never offer a PIN: the target's password only."""
from __future__ import annotations

import pexpect

from tests.realapps.harness import (
    ALICE,
    BOB,
    LIMIT,
    ROOT_ACCOUNT,
    WRONG_PIN,
    Stopwatch,
    Transcript,
)


def su(pin_box, target, as_user=ALICE):
    pin_box.wire("su", "su-l")  # su-l includes su: enable wants both named
    child = pin_box.box.spawn(["su", target, "-c", "echo SU-AS-$(id -un)"], user=as_user.name)
    return child, Transcript(child)


def finish(child, seen, status):
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == status, seen


def test_su_wrong_pin_and_wrong_password_never_get_in(pin_box):
    child, seen = su(pin_box, ALICE.name)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect(r"Incorrect PIN \(2 attempts left\)\.")
    child.expect("Password: ")
    child.sendline(WRONG_PIN)
    child.expect("Authentication failure")
    finish(child, seen, 1)
    assert "SU-AS-" not in seen.text
    assert pin_box.failures(ALICE) == 1


def test_su_another_users_pin_never_gets_in(pin_box):
    child, seen = su(pin_box, ALICE.name)
    child.expect("PIN: ")
    child.sendline(BOB.pin)
    child.expect("Password: ")
    child.sendline(BOB.password)
    child.expect("Authentication failure")
    finish(child, seen, 1)
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (1, 0)


def test_su_to_self_with_the_pin(pin_box, timing_log):
    watch = Stopwatch()
    child, seen = su(pin_box, ALICE.name)
    child.expect("PIN: ")
    watch.mark("prompt")
    child.sendline(ALICE.pin)
    watch.mark("pin_sent")
    child.expect("SU-AS-alice")
    watch.mark("success")
    finish(child, seen, 0)
    assert pin_box.counter(ALICE) == (0, LIMIT)
    timing_log.record("su", watch, "su to oneself, helper backend (set-uid host), Debian stack")


def test_su_wrong_pin_then_password_gets_in(pin_box):
    child, seen = su(pin_box, ALICE.name)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect("Password: ")
    child.sendline(ALICE.password)
    child.expect("SU-AS-alice")
    finish(child, seen, 0)
    assert pin_box.failures(ALICE) == 1


def test_su_root_never_offers_roots_pin_to_a_user(pin_box):
    """alice knows root's PIN: no PIN prompt, root's PIN at the password prompt fails."""
    pin_box.enrol(ROOT_ACCOUNT)
    child, seen = su(pin_box, "root")
    child.expect("Password: ")
    child.sendline(ROOT_ACCOUNT.pin)
    child.expect("Authentication failure")
    finish(child, seen, 1)
    assert "PIN" not in seen.text
    assert pin_box.counter(ROOT_ACCOUNT) == (0, LIMIT)


def test_su_root_with_roots_password(pin_box):
    pin_box.enrol(ROOT_ACCOUNT)
    child, seen = su(pin_box, "root")
    child.expect("Password: ")
    child.sendline(ROOT_ACCOUNT.password)
    child.expect("SU-AS-root")
    finish(child, seen, 0)
    assert "PIN" not in seen.text
    assert pin_box.counter(ROOT_ACCOUNT) == (0, LIMIT)


def test_su_to_another_user_offers_no_pin(pin_box):
    child, seen = su(pin_box, BOB.name)
    child.expect("Password: ")
    child.sendline(BOB.password)
    child.expect("SU-AS-bob")
    finish(child, seen, 0)
    assert "PIN" not in seen.text
    assert pin_box.counter(BOB) == (0, LIMIT)
