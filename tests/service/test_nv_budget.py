"""The NV write budget's arithmetic (pinutil/service/nv_budget.py) on a fake clock.
tests/service/test_nv_budget_service.py shows it through a real service and TPM."""
from __future__ import annotations

from pinutil.service import nv_budget
from pinutil.service.nv_budget import HOUR, NvBudget
from tests.service.test_throttle import Clock

ALICE, BOB = 1000, 1001


def test_a_burst_of_the_budget_then_one_write_per_share_of_the_hour():
    clock = Clock()
    budget = NvBudget(100, clock=clock)
    for _ in range(50):  # wrong, right: two writes each
        assert budget.wait_left(ALICE) == 0
        budget.wrong_pin(ALICE)
        budget.right_pin(ALICE)
    assert budget.owed(ALICE) == 100
    assert budget.wait_left(ALICE) == 36  # one write refills in 3600 / 100 s
    assert budget.holds() == {ALICE: 36}
    assert budget.wait_left(BOB) == 0  # per account
    clock.now += 35.5
    assert budget.wait_left(ALICE) == 1  # whole seconds, rounded up
    clock.now += 0.5
    assert budget.wait_left(ALICE) == 0
    budget.wrong_pin(ALICE)
    assert budget.wait_left(ALICE) == 36
    clock.now += HOUR
    assert budget.owed(ALICE) == 0 and budget.holds() == {}
    assert budget.full_at() is None  # a full budget is forgotten


def test_a_right_pin_writes_only_after_a_wrong_one():
    budget = NvBudget(100, clock=Clock())
    for _ in range(1000):  # pinCount stays 0: the TPM writes nothing
        budget.right_pin(ALICE)
    assert budget.owed(ALICE) == 0
    budget.wrong_pin(ALICE)
    budget.wrong_pin(ALICE)
    budget.right_pin(ALICE)  # one reset, whatever the wrong PINs before it
    budget.right_pin(ALICE)
    assert budget.owed(ALICE) == 3


def test_setups_changes_and_deletes_cost_what_they_write():
    clock = Clock()
    budget = NvBudget(100, clock=clock)
    budget.replaced(ALICE, nv_budget.SETUP)
    budget.replaced(ALICE, nv_budget.CHANGE)
    budget.replaced(ALICE, nv_budget.DELETE)
    assert budget.owed(ALICE) == 6
    budget.wrong_pin(ALICE)
    budget.replaced(ALICE, nv_budget.CHANGE)  # a new index: pinCount 0
    budget.right_pin(ALICE)  # so no reset to pay
    assert budget.owed(ALICE) == 10


def test_a_change_may_overdraw_and_the_wait_grows_with_it():
    clock = Clock()
    budget = NvBudget(100, clock=clock)
    budget.charge(ALICE, 99)
    assert budget.wait_left(ALICE) == 0  # one whole write left: a change may go
    budget.replaced(ALICE, nv_budget.CHANGE)
    assert budget.owed(ALICE) == 102
    assert budget.wait_left(ALICE) == 3 * 36
    assert budget.full_at() == clock.now + 102 * 36


def test_a_heavy_but_honest_user_never_meets_the_default():
    """Twenty unlocks an hour, each after a typo (and every fifth after two), three
    PIN changes a day, a delete and a new setup: eight hours, never a wait."""
    clock = Clock()
    budget = NvBudget(clock=clock)
    assert budget.per_hour == nv_budget.WRITES_PER_HOUR == 100
    for hour in range(8):
        for unlock in range(20):
            for _ in range(2 if unlock % 5 == 0 else 1):
                assert budget.wait_left(ALICE) == 0
                budget.wrong_pin(ALICE)
            assert budget.wait_left(ALICE) == 0
            budget.right_pin(ALICE)
            clock.now += HOUR / 20
        if hour in (1, 3, 5):
            assert budget.wait_left(ALICE) == 0
            budget.replaced(ALICE, nv_budget.CHANGE)
    budget.replaced(ALICE, nv_budget.DELETE)
    assert budget.wait_left(ALICE) == 0
    budget.replaced(ALICE, nv_budget.SETUP)
    assert budget.wait_left(ALICE) == 0


def test_no_budget_is_kept_with_zero():
    budget = NvBudget(0, clock=Clock())  # pinutild --nv-writes-per-hour 0
    for _ in range(10_000):
        budget.wrong_pin(ALICE)
        budget.right_pin(ALICE)
    assert budget.wait_left(ALICE) == 0 and budget.full_at() is None
