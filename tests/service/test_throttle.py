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
        t.failed(ALICE)
    assert t.wait_left(ALICE) == 0


def test_two_wrong_pins_cost_nothing_then_the_delay_grows(clock):
    t = Throttle(clock=clock)
    for _ in range(2):
        t.failed(ALICE)
        assert t.wait_left(ALICE) == 0  # a typo, then the right PIN: at once
    t.failed(ALICE)
    assert t.wait_left(ALICE) == 1
    clock.now += 1
    assert t.wait_left(ALICE) == 0
    t.failed(ALICE)
    assert t.wait_left(ALICE) == 2
    clock.now += 0.5
    assert t.wait_left(ALICE) == 2  # whole seconds, rounded up
    for _ in range(10):
        t.failed(ALICE)
    assert t.wait_left(ALICE) == 30  # capped


def test_a_right_pin_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed(ALICE)
    t.end(ALICE)
    t.failed(ALICE)
    assert t.wait_left(ALICE) == 0
    assert t.forget_at() is not None


def test_a_quiet_quarter_of_an_hour_ends_the_series(clock):
    t = Throttle(clock=clock)
    for _ in range(5):
        t.failed(ALICE)
    assert t.forget_at() == clock.now + throttle.FORGET_AFTER
    clock.now += throttle.FORGET_AFTER
    assert t.forget_at() is None
    t.failed(ALICE)
    assert t.wait_left(ALICE) == 0  # a new series: its first wrong PIN


def test_series_are_per_user(clock):
    t = Throttle(clock=clock)
    for _ in range(4):
        t.failed(ALICE)
    t.failed(BOB)
    assert t.wait_left(BOB) == 0
    t.end(BOB)
    assert t.wait_left(ALICE) == 2


def test_the_holds_root_checks_are_sent_with(clock):
    """Root's PIN checks go to the worker with every account that must still wait
    (it alone resolves their names: review F14); a series still free is not one."""
    t = Throttle(clock=clock)
    assert t.holds() == {}
    for _ in range(4):
        t.failed(ALICE)
    for _ in range(2):
        t.failed(BOB)  # two typos: no delay yet
    assert t.holds() == {ALICE: 2}
    clock.now += 2
    assert t.holds() == {}

