"""pin-status and pin-check through a real pinutild on a real swtpm, with callers of
different uids (setpriv): the outcomes are the ones `pinutil --json` gives, and the
TPM's counter (read out of band with tpm2-tools) moves exactly by the wrong PINs."""
from __future__ import annotations

import pytest

from tests.support.accounts import AS_NOBODY, SU_LIKE

PIN = "1234"


def test_status_of_an_enrolled_user(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    reply = pinutild.ask(verb="pin-status", user="root")
    assert reply == {"result": "success", "enrolled": True, "failures": 0, "limit": 3,
                     "locked": False, "attempts_left": 3, "record": "ok"}


def test_status_without_a_pin(pin_env, pinutild):
    reply = pinutild.ask(verb="pin-status", user="root")
    assert reply["result"] == "success" and reply["enrolled"] is False


def test_right_pin(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    assert pinutild.ask(verb="pin-check", user="root", pin=PIN.encode()) == {"result": "success"}
    assert pin_env.counter("root") == (0, 3)


def test_wrong_pins_count_then_lock(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    for left in (2, 1, 0):
        reply = pinutild.ask(verb="pin-check", user="root", pin=b"9999")
        assert reply["result"] == "wrong_pin" and reply["attempts_left"] == left
    assert pin_env.counter("root") == (3, 3)
    assert pinutild.ask(verb="pin-check", user="root", pin=PIN.encode())["result"] == "locked"
    assert pin_env.counter("root") == (3, 3)


@pytest.mark.parametrize("pin", [b"", b"12", b"123456789", b"12a4", b"\xd9\xa3234",
                                 b"12\x0034", b"1234\n", b"9" * 4000])
def test_invalid_pin_spends_nothing(pin_env, pinutild, pin):
    pin_env.enrol("root", PIN)
    assert pinutild.ask(verb="pin-check", user="root", pin=pin)["result"] == "invalid_pin"
    assert pin_env.counter("root") == (0, 3)


def test_not_enrolled_and_unknown_user(pin_env, pinutild):
    assert pinutild.ask(verb="pin-check", user="root", pin=b"1234")["result"] == "not_enrolled"
    reply = pinutild.ask(verb="pin-check", user="no-such-user-x", pin=b"1234")
    assert reply["result"] == "unknown_user"


def test_no_pin_for_an_unrecorded_index(pin_env, pinutild):
    import os

    pin_env.enrol("root", PIN)
    os.unlink(os.path.join(pin_env.enrolment_dir, "0"))
    assert pinutild.ask(verb="pin-status", user="root")["record"] == "mismatch"
    reply = pinutild.ask(verb="pin-check", user="root", pin=PIN.encode())
    assert reply["result"] == "enrolment_mismatch"


def test_another_users_pin_is_refused_before_the_tpm(pin_env, pinutild):
    """nobody may neither read nor try root's PIN: refused, root's counter unchanged."""
    pin_env.enrol("root", PIN)
    assert pinutild.ask(AS_NOBODY, verb="pin-status", user="root")["result"] == \
        "permission_denied"
    for pin in (b"9999", PIN.encode()):
        reply = pinutild.ask(AS_NOBODY, verb="pin-check", user="root", pin=pin)
        assert reply["result"] == "permission_denied"
    assert pin_env.counter("root") == (0, 3)


def test_a_user_checks_their_own_pin(pin_env, pinutild):
    pin_env.enrol("nobody", PIN)
    assert pinutild.ask(AS_NOBODY, verb="pin-check", user="nobody",
                        pin=PIN.encode())["result"] == "success"
    reply = pinutild.ask(AS_NOBODY, verb="pin-check", user="nobody", pin=b"0000")
    assert reply["result"] == "wrong_pin"
    assert pin_env.counter("nobody") == (1, 3)


def test_root_checks_anyone(pin_env, pinutild):
    pin_env.enrol("nobody", PIN)
    assert pinutild.ask(("setpriv", "--"), verb="pin-check", user="nobody",
                        pin=PIN.encode())["result"] == "success"


def test_a_set_uid_root_caller_counts_as_its_real_uid(pin_env, pinutild):
    """What `su victim` is: effective uid 0, real uid the user who ran it. SO_PEERCRED
    says 0; the service goes by the real uid, so a user cannot spend (and lock) another
    user's PIN attempts through a set-uid root host, as with the pinutil helper."""
    pin_env.enrol("root", PIN)
    for pin in (b"9999", PIN.encode()):
        reply = pinutild.ask(SU_LIKE, verb="pin-check", user="root", pin=pin)
        assert reply["result"] == "permission_denied"
    assert pin_env.counter("root") == (0, 3)
    pin_env.enrol("nobody", PIN)  # its real uid's own PIN: allowed (sudo's case)
    assert pinutild.ask(SU_LIKE, verb="pin-check", user="nobody",
                        pin=PIN.encode())["result"] == "success"
