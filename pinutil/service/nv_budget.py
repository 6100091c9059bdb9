"""pinutild's per-account budget of TPM NV writes (review G3), beside the delay.

Every wrong PIN is an NV write (the index's pinCount + 1), the right PIN after wrong
ones another (pinCount back to 0), and a setup, change or delete defines, writes or
undefines the index. The per-user delay (throttle.py) only counts wrong PINs IN A ROW:
"wrong, right" repeated, or changing one's own PIN back and forth, was never slowed,
so one local user with a PIN could make the TPM write NV without bound (hundreds of
writes a second on swtpm). A real TPM's NV endures a finite number of writes and
answers TPM_RC_NV_RATE when written too fast: one user could wear the chip out or make
everyone's use of it fail (disk unlock included). pinutild is the one place that sees
all of these requests, so it bounds them here.

Each account (uid) has a budget of `per_hour` writes (default 100) that refills at
that rate (one write every 36 s): a burst of 100, then at most 100 an hour in the
long run. What a request really wrote is charged to the account whose index it wrote
(`WRONG_PIN`, `RESET`, `SETUP`, `CHANGE`, `DELETE`). A right PIN is charged only
after a wrong one the service counted (`counting`): with pinCount at 0 the TPM writes
nothing, so a user's ordinary logins cost nothing. Once the budget holds less than
one write, every request that could write to that account's index (a PIN check, the
prompt of a pin-login, a change, a delete, a user's own setup) is refused with
`throttled` and the wait, before any TPM command, in the same places and for the
same callers as the delay (server.py). A request charged while a little budget was
left may take it below zero (a change is 3 writes): the wait is then longer.

Why these numbers: someone who mistypes often (twenty unlocks an hour, each with a
typo: 40 writes) and changes their PIN a few times (3 each) stays far below 100; the
TPM's own lock (5 wrong PINs by default) stops a series long before. An attacker gets
100 writes an hour, 2,400 a day, instead of millions.

Kept in the service's memory only, like the delay: the service does not exit for
idleness while a budget is not full again (`full_at`). Pure bookkeeping, with the
clock passed in (tests use a fake one).
"""
from __future__ import annotations

from math import ceil
from time import monotonic

from pinutil.errors import PinThrottled

WRITES_PER_HOUR = 100
HOUR = 3600.0

# The NV writes each outcome makes to the account's PIN index.
WRONG_PIN = 1  # pinCount + 1
RESET = 1  # the right PIN after wrong ones: pinCount back to 0
SETUP = 2  # NV_DefineSpace, then its first NV_Write
CHANGE = 3  # the new index defined and written, the old one undefined
DELETE = 1  # NV_UndefineSpace


def refusal(wait: int) -> PinThrottled:
    """The answer to a request that would write while its account's budget is spent."""
    return PinThrottled("too many wrong PINs and PIN changes for this account: the "
                        f"TPM's writes are limited; try again in {wait} s",
                        retry_after=wait)


class NvBudget:
    """The accounts' budgets of NV writes (see the module docstring)."""

    def __init__(self, per_hour: int = WRITES_PER_HOUR, clock=monotonic) -> None:
        self.per_hour = per_hour  # pinutild --nv-writes-per-hour (0: no budget)
        self.clock = clock
        self._spent: dict[int, tuple[float, float]] = {}  # uid -> (writes owed, when)
        self.counting: set[int] = set()  # uids whose pinCount a wrong PIN made non-zero

    def owed(self, uid: int) -> float:
        """Writes charged to `uid` and not yet refilled (0: its budget is full)."""
        spent = self._spent.get(uid)
        if spent is None:
            return 0.0
        left = spent[0] - (self.clock() - spent[1]) * self.per_hour / HOUR
        if left <= 0:
            del self._spent[uid]
            return 0.0
        return left

    def wait_left(self, uid: int) -> int:
        """Whole seconds before a request that may write to `uid`'s index may go to the
        TPM (0: now, with at least one whole write left)."""
        if not self.per_hour:
            return 0
        over = self.owed(uid) + 1 - self.per_hour
        return max(0, ceil(over * HOUR / self.per_hour - 1e-9))

    def holds(self) -> dict[int, int]:
        """Every account that must still wait: uid -> whole seconds (usually empty)."""
        waits = {uid: self.wait_left(uid) for uid in list(self._spent)}
        return {uid: wait for uid, wait in waits.items() if wait}

    def charge(self, uid: int, writes: int) -> None:
        """The TPM made `writes` NV writes to `uid`'s index."""
        if self.per_hour:
            self._spent[uid] = (self.owed(uid) + writes, self.clock())

    def wrong_pin(self, uid: int) -> None:
        self.counting.add(uid)
        self.charge(uid, WRONG_PIN)

    def right_pin(self, uid: int) -> None:
        """The right PIN: a write only when a wrong one before it made pinCount non-zero."""
        if uid in self.counting:
            self.counting.discard(uid)
            self.charge(uid, RESET)

    def replaced(self, uid: int, writes: int) -> None:
        """A setup, change or delete: the index is new (pinCount 0) or gone."""
        self.counting.discard(uid)
        self.charge(uid, writes)

    def full_at(self) -> float | None:
        """When every budget is full again (None: all are). The service does not exit
        for idleness before then: a restart would refill them early."""
        for uid in list(self._spent):
            self.owed(uid)
        if not self._spent:
            return None
        return max(owed_at + owed * HOUR / self.per_hour
                   for owed, owed_at in self._spent.values())
