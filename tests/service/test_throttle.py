"""The per-user delay's bookkeeping (pinutil/service/throttle.py) on a fake clock.
tests/service/test_throttle_service.py shows it through a real service and TPM."""
from __future__ import annotations

import pytest

from pinutil.service import throttle
from pinutil.service.throttle import Throttle

ALICE, BOB = 1000, 1001
#: The accounts' names as the worker resolves them (users.lookup_user): "alice" and
#: "admin" are two names of one uid, "1000" and "01000" her uid written out.
ACCOUNTS = {"alice": ALICE, "admin": ALICE, "1000": ALICE, "01000": ALICE, "bob": BOB}


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_schedule():
    assert [throttle.delay_after(n) for n in range(11)] == [
        0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30]


def test_the_longest_delay_is_the_services_choice(clock):
    assert throttle.delay_after(200, 5) == 5
    t = Throttle(0, clock=clock)  # pinutild --pin-delay-max 0: the TPM's count alone
    for _ in range(10):
        t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 0


def test_two_wrong_pins_cost_nothing_then_the_delay_grows(clock):
    t = Throttle(clock=clock)
    for _ in range(2):
        t.failed(ALICE)
        assert t.wait_left("alice", ALICE) == 0  # a typo, then the right PIN: at once
    t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 1
    clock.now += 1
    assert t.wait_left("alice", ALICE) == 0
    t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 2
    clock.now += 0.5
    assert t.wait_left("alice", ALICE) == 2  # whole seconds, rounded up
    for _ in range(10):
        t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 30  # capped


def test_a_right_pin_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed(ALICE)
    t.end(ALICE)
    t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 0
    assert t.forget_at() is not None


def test_a_quiet_quarter_of_an_hour_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed(ALICE)
    assert t.forget_at() == clock.now + throttle.FORGET_AFTER
    clock.now += throttle.FORGET_AFTER
    assert t.forget_at() is None
    t.failed(ALICE)
    assert t.wait_left("alice", ALICE) == 0  # a new series: its first wrong PIN


def test_who_is_told_to_wait(clock):
    t = Throttle(clock=clock, uid_of=ACCOUNTS.get)
    for _ in range(4):
        t.failed(ALICE)
    assert t.wait_left("alice", 0) == 2  # root, by her name
    assert t.wait_left("alice", ALICE) == 2  # alice herself
    assert t.wait_left("1000", ALICE) == 2  # alice, whatever name she sends
    assert t.wait_left("alice", BOB) == 0  # bob learns nothing: the worker says no
    assert t.wait_left("bob", BOB) == 0 and t.wait_left("bob", 0) == 0  # others go on


def test_series_are_per_user(clock):
    t = Throttle(clock=clock, uid_of=ACCOUNTS.get)
    for _ in range(4):
        t.failed(ALICE)
    t.failed(BOB)
    assert t.wait_left("bob", 0) == 0
    t.end(BOB)
    assert t.wait_left("alice", 0) == 2


def test_every_name_of_one_account_is_one_series(clock):
    """Root's checks by another name of the account (review F6): no fresh attempts."""
    t = Throttle(clock=clock, uid_of=ACCOUNTS.get)
    for _ in range(3):
        t.failed(ALICE)
    for alias in ("alice", "admin", "1000", "01000"):
        assert t.wait_left(alias, 0) == 1, alias
    assert t.wait_left("nobody-such", 0) == 0  # no account: the worker refuses it


def test_no_lookup_while_no_series_is_kept(clock):
    """The event loop asks NSS nothing in the usual case (no wrong PINs pending)."""
    def must_not_look_up(name):
        raise AssertionError(f"looked up {name}")

    t = Throttle(clock=clock, uid_of=must_not_look_up)
    assert t.wait_left("alice", 0) == 0
    t.failed(ALICE)
    t.end(ALICE)
    assert t.wait_left("alice", 0) == 0
