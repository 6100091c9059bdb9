"""pinutild's per-user delay after consecutive wrong PINs, on top of the TPM's own count.

The TPM's counter bounds how many wrong PINs a user's index takes before it locks
(`pin_lockout_max_attempts`, up to 100); this bounds how fast they come. After a
user's third wrong PIN in a row, their next PIN check must wait 1 s, then 2, 4, 8, 16
and at most 30 s after each further wrong PIN (the first two are typos: a wrong PIN
and then the right one go through at once). A right PIN ends the series, and so does the TPM's lock (the user is then told
"locked", which says more than a delay would); so do 15
minutes without a wrong PIN (waiting that long is slower than waiting out the delays,
so it gives a guesser nothing). A check that comes too early is refused with "try
again in N s" (result `throttled`, PAM_AUTH_ERR): it is never sent to the TPM and
spends no attempt; a user's own check is refused at once by the event loop and holds
neither the TPM worker nor a connection, root's by the worker (below), in the time
of a name lookup, so it delays nobody else. (Holding the request instead would keep its connection for
up to 30 s, beyond the client's own time limit, and leave the user facing a frozen
prompt.)

Kept in the service's memory only, per account (uid). A non-root caller may check
only their own PIN, so its requests count against its own uid whatever name they
carry (another user's name gets "permission denied" from the worker anyway, so the
delay reveals nothing about other users): the event loop refuses them itself. Root's
requests count against the uid their name resolves to, which only the TPM worker
looks up (users.lookup_user: an account name, or a decimal uid when no account has
that name), so "65534", "065534" and two names of one uid are one series, not one
fresh series each (review F6). The event loop never asks NSS (a slow directory, LDAP
or sssd timing out, would stall every client of the one loop: review F14): root's
check goes to the worker with the accounts still in their delay (`holds`, computed
at dispatch), and the worker refuses it there, before any TPM command, when its
account is one of them. A wrong PIN counts against the uid the worker found for the
name. Only the user and root can make a user's wrong PINs count, so the table holds
at most one series per enrolled user.

Wrong PINs that are not in a row, and PIN changes, are bounded by the account's
budget of TPM writes beside this (nv_budget.py).

Pure bookkeeping, with the clock passed in (tests use a fake one).
"""
from __future__ import annotations

from math import ceil
from time import monotonic

from pinutil.errors import PinThrottled

FREE_FAILURES = 2  # wrong PINs in a row with no delay after them
FIRST_DELAY = 1.0  # seconds after the first delayed one; doubles each time
MAX_DELAY = 30.0
FORGET_AFTER = 15 * 60.0  # seconds without a wrong PIN that end a series


def delay_after(failures: int, longest: float = MAX_DELAY) -> float:
    """Seconds a user must wait after `failures` wrong PINs in a row."""
    if failures <= FREE_FAILURES:
        return 0.0
    return min(FIRST_DELAY * 2 ** min(failures - FREE_FAILURES - 1, 32), longest)


class _Series:
    __slots__ = ("failures", "last")

    def __init__(self) -> None:
        self.failures, self.last = 0, 0.0


IN_A_ROW = "too many wrong PINs in a row"


def refusal(wait: int, why: str = "too many wrong PINs") -> PinThrottled:
    """The answer to a PIN check that must wait `wait` more seconds. The event loop says
    `why` (IN_A_ROW, or nv_budget's words); the worker, which refuses root's checks
    with the holds of both (server.py), says only what both have in common."""
    return PinThrottled(f"{why}: try again in {wait} s", retry_after=wait)


class Throttle:
    """The per-user series of wrong PINs (see the module docstring)."""

    def __init__(self, longest: float = MAX_DELAY, clock=monotonic) -> None:
        self.longest = longest  # pinutild --pin-delay-max (0: no delay at all)
        self.clock = clock
        self._series: dict[int, _Series] = {}  # uid -> its series

    def wait_left(self, uid: int) -> int:
        """Whole seconds before a PIN check of the account `uid` may go to the TPM
        (0: now)."""
        series = self._live(uid)
        if series is None:
            return 0
        left = series.last + delay_after(series.failures, self.longest) - self.clock()
        return max(0, ceil(left))

    def holds(self) -> dict[int, int]:
        """Every account that must still wait: uid -> whole seconds (usually empty).
        Sent with root's PIN checks to the worker, which alone resolves their names."""
        waits = {uid: self.wait_left(uid) for uid in list(self._series)}
        return {uid: wait for uid, wait in waits.items() if wait}

    def failed(self, uid: int) -> None:
        """The TPM counted a wrong PIN of the account `uid`."""
        series = self._live(uid) or self._series.setdefault(uid, _Series())
        series.failures += 1
        series.last = self.clock()

    def end(self, uid: int) -> None:
        """The right PIN of the account `uid`, or the TPM has now locked it (its own
        refusal, "locked", then says more than a delay would): the series ends."""
        self._series.pop(uid, None)

    def forget_at(self) -> float | None:
        """When the last series ends by itself (None: none is kept). The service does
        not exit for idleness before then: leaving would end every series early."""
        for uid in list(self._series):
            self._live(uid)
        if not self._series:
            return None
        return max(s.last for s in self._series.values()) + FORGET_AFTER

    def _live(self, uid: int) -> _Series | None:
        series = self._series.get(uid)
        if series is not None and self.clock() - series.last >= FORGET_AFTER:
            del self._series[uid]
            return None
        return series
