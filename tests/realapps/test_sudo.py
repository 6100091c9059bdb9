"""sudo (Debian's package, set-uid root, its own retry loop) with the PIN in front of
Debian's /etc/pam.d/sudo, driven on a real pty."""
from __future__ import annotations

import pexpect

from tests.realapps.harness import ALICE, BOB, LIMIT, WRONG_PIN, Stopwatch, Transcript

ROOT_MARK = "ROOT-SHELL-0"
COMMAND = ["sudo", "-k", "sh", "-c", "echo ROOT-SHELL-$(id -u)"]
SUDO_PROMPT = r"\[sudo\] password for alice: "


def sudo(pin_box, *extra):
    pin_box.wire("sudo")
    child = pin_box.box.spawn([*COMMAND[:2], *extra, *COMMAND[2:]], user=ALICE.name)
    return child, Transcript(child)


def test_sudo_pin_logs_in(pin_box, timing_log):
    watch = Stopwatch()
    child, seen = sudo(pin_box)
    child.expect("PIN: ")
    watch.mark("prompt")
    child.sendline(ALICE.pin)
    watch.mark("pin_sent")
    child.expect(ROOT_MARK)
    watch.mark("success")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    assert pin_box.counter(ALICE) == (0, LIMIT)
    timing_log.record("sudo", watch, "sudo -k, helper backend (set-uid host), Debian stack")


def test_sudo_wrong_pin_and_wrong_passwords_never_get_in(pin_box):
    child, seen = sudo(pin_box)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect(r"Incorrect PIN \(2 attempts left\)\.")
    for _ in range(3):  # sudo's passwd_tries: the same handle, three rounds
        child.expect(SUDO_PROMPT)
        child.sendline(WRONG_PIN)
    child.expect("3 incorrect password attempts")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1, seen
    assert ROOT_MARK not in seen.text
    assert seen.text.count("PIN: ") == 1  # one PIN attempt for the whole handle
    assert pin_box.failures(ALICE) == 1


def test_sudo_another_users_pin_never_gets_in(pin_box):
    child, seen = sudo(pin_box)
    child.expect("PIN: ")
    child.sendline(BOB.pin)  # bob's correct PIN, typed at alice's prompt
    child.expect(r"Incorrect PIN \(2 attempts left\)\.")
    for _ in range(3):
        child.expect(SUDO_PROMPT)
        child.sendline(BOB.password)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1, seen
    assert ROOT_MARK not in seen.text
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (1, 0)


def test_sudo_wrong_pin_then_password_gets_in(pin_box):
    child, seen = sudo(pin_box)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect(SUDO_PROMPT)
    child.sendline(ALICE.password)
    child.expect(ROOT_MARK)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    assert pin_box.failures(ALICE) == 1


def test_sudo_retries_after_a_wrong_password_spend_no_second_pin(pin_box):
    """Round 1: wrong PIN, wrong password; round 2 (same handle): no PIN prompt, the
    password gets in."""
    child, seen = sudo(pin_box)
    child.expect("PIN: ")
    child.sendline(WRONG_PIN)
    child.expect(SUDO_PROMPT)
    child.sendline("not the password")
    child.expect("Sorry, try again.")
    child.expect(SUDO_PROMPT)
    child.sendline(ALICE.password)
    child.expect(ROOT_MARK)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    assert seen.text.count("PIN") == 2  # the prompt and its "Incorrect PIN" answer
    assert pin_box.failures(ALICE) == 1


# ---- sudo -S: one line of standard input per prompt ----------------------------------------
PIN_SHAPED_PASSWORD = "24680"  # fits the PIN rules, is nobody's PIN


def sudo_stdin(pin_box, lines):
    pin_box.wire("sudo")
    return pin_box.box.run([*COMMAND[:2], "-S", *COMMAND[2:]], user=ALICE.name,
                           input="".join(f"{line}\n" for line in lines), check=False)


def test_sudo_stdin_pin_shaped_password_alone_never_gets_in(pin_box):
    """`echo PASSWORD | sudo -S`: the one line answers the PIN prompt (one attempt spent),
    the password prompt then reads end of file: refused."""
    pin_box.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    done = sudo_stdin(pin_box, [PIN_SHAPED_PASSWORD])
    assert done.returncode == 1, done.stderr
    assert ROOT_MARK.encode() not in done.stdout
    assert b"no password was provided" in done.stderr
    assert pin_box.failures(ALICE) == 1


def test_sudo_stdin_pin_shaped_password_on_every_line_spends_one_attempt(pin_box):
    """A script that feeds its password to every prompt (sudo retries three times)."""
    pin_box.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    done = sudo_stdin(pin_box, [PIN_SHAPED_PASSWORD] * 4)
    assert done.returncode == 0, done.stderr
    assert ROOT_MARK.encode() in done.stdout
    assert done.stderr.decode().count("PIN") == 2  # "PIN: " and "Incorrect PIN (...)"
    assert pin_box.failures(ALICE) == 1


def test_sudo_stdin_empty_pin_line_then_password_spends_nothing(pin_box):
    """What scripts can do: an empty line at the PIN prompt, then the password."""
    pin_box.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    done = sudo_stdin(pin_box, ["", PIN_SHAPED_PASSWORD])
    assert done.returncode == 0, done.stderr
    assert ROOT_MARK.encode() in done.stdout
    assert pin_box.failures(ALICE) == 0


def test_sudo_stdin_pin_gets_in(pin_box):
    done = sudo_stdin(pin_box, [ALICE.pin])
    assert done.returncode == 0, done.stderr
    assert ROOT_MARK.encode() in done.stdout
    assert pin_box.failures(ALICE) == 0
