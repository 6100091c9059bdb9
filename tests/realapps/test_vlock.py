"""vlock (Debian's package: the user runs it, /usr/sbin/vlock-main is set-uid root) with
the PIN in front of a `vlock` service made from Debian's `other` (vlock ships no pam.d
file: the admin copies `other`, then runs `pypam enable`), on a real pty. vlock asks the user, then root, and starts over; every unlock try
is a new PAM handle, so each wrong PIN typed costs one attempt, and nothing else does."""
from __future__ import annotations

import pexpect

from tests.realapps.harness import ALICE, BOB, LIMIT, WRONG_PIN, Stopwatch, Transcript

UNLOCK = r"Please press \[ENTER\] to unlock\."


def vlock(pin_box):
    pin_box.wire("vlock", text=pin_box.box.read("/etc/pam.d/other"))
    child = pin_box.box.spawn(["vlock", "--current"], user=ALICE.name)
    return child, Transcript(child)


def test_vlock_wrong_pins_and_passwords_never_unlock(pin_box):
    child, seen = vlock(pin_box)
    for round, typed_pin in enumerate((WRONG_PIN, BOB.pin), start=1):
        child.expect(UNLOCK)
        child.sendline("")
        child.expect(r"alice's PIN( \(\d attempts? left\))?: ")
        child.sendline(typed_pin)
        child.expect(r"Incorrect PIN \(\d attempts? left\)\.\r\nPassword: ")
        child.sendline(BOB.password)
        child.expect("root's Password: ")  # vlock then lets root unlock
        child.sendline(ALICE.password)
        assert pin_box.failures(ALICE) == round
    child.expect(UNLOCK)
    assert child.isalive(), seen  # still locked
    child.close(force=True)
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (2, 0)


def test_vlock_unlocks_with_the_pin(pin_box, timing_log):
    child, seen = vlock(pin_box)
    child.expect(UNLOCK)
    watch = Stopwatch()  # from the user's Enter: vlock is already running
    child.sendline("")
    child.expect("alice's PIN: ")
    watch.mark("prompt")
    child.sendline(ALICE.pin)
    watch.mark("pin_sent")
    child.expect(pexpect.EOF)
    watch.mark("success")
    child.close()
    assert child.exitstatus == 0, seen
    assert pin_box.counter(ALICE) == (0, LIMIT)
    timing_log.record("vlock", watch, "vlock --current, from Enter to exit; helper backend "
                      "(set-uid vlock-main), Debian's `other` stack")


def test_vlock_wrong_pin_then_password_unlocks(pin_box):
    child, seen = vlock(pin_box)
    child.expect(UNLOCK)
    child.sendline("")
    child.expect("alice's PIN: ")
    child.sendline(WRONG_PIN)
    child.expect(r"Incorrect PIN \(2 attempts left\)\.\r\nPassword: ")
    child.sendline(ALICE.password)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    assert pin_box.failures(ALICE) == 1
