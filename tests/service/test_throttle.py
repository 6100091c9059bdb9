"""The per-user delay's bookkeeping (pinutil/service/throttle.py) on a fake clock.
tests/service/test_throttle_service.py shows it through a real service and TPM."""
from __future__ import annotations

import pytest

from pinutil.service import throttle
from pinutil.service.throttle import Throttle

ALICE, BOB = 1000, 1001


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
        t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 0


def test_two_wrong_pins_cost_nothing_then_the_delay_grows(clock):
    t = Throttle(clock=clock)
    for _ in range(2):
        t.failed("alice", ALICE)
        assert t.wait_left("alice", ALICE) == 0  # a typo, then the right PIN: at once
    t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 1
    clock.now += 1
    assert t.wait_left("alice", ALICE) == 0
    t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 2
    clock.now += 0.5
    assert t.wait_left("alice", ALICE) == 2  # whole seconds, rounded up
    for _ in range(10):
        t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 30  # capped


def test_a_right_pin_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed("alice", ALICE)
    t.end("alice", ALICE)
    t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 0
    assert t.forget_at() is not None


def test_a_quiet_quarter_of_an_hour_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed("alice", ALICE)
    assert t.forget_at() == clock.now + throttle.FORGET_AFTER
    clock.now += throttle.FORGET_AFTER
    assert t.forget_at() is None
    t.failed("alice", ALICE)
    assert t.wait_left("alice", ALICE) == 0  # a new series: its first wrong PIN


def test_who_is_told_to_wait(clock):
    t = Throttle(clock=clock)
    for _ in range(4):
        t.failed("alice", ALICE)
    assert t.wait_left("alice", 0) == 2  # root, by the name it was counted under
    assert t.wait_left("alice", ALICE) == 2  # alice herself
    assert t.wait_left("1000", ALICE) == 2  # alice, whatever name she sends
    assert t.wait_left("alice", BOB) == 0  # bob learns nothing: the worker says no
    assert t.wait_left("bob", BOB) == 0 and t.wait_left("bob", 0) == 0  # others go on


def test_series_are_per_user(clock):
    t = Throttle(clock=clock)
    for _ in range(4):
        t.failed("alice", ALICE)
    t.failed("bob", BOB)
    assert t.wait_left("bob", 0) == 0
    t.end("bob", BOB)
    assert t.wait_left("alice", 0) == 2
