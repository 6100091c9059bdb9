"""The NV write budget through a real pinutild, swtpm and the service's own clients
(review G3): one user with their own PIN could make the TPM write NV without bound,
by "wrong PIN, right PIN" repeated (never two wrong in a row, so never a delay) or by
changing their PIN back and forth, which the old service never refused. Now each
account has 100 writes, refilled at 100 an hour; then a request that could write is
refused with `throttled`, before any TPM command (a refused wrong PIN leaves the
index's counter, read out of band, at 0). As in test_throttle_service.py the
service's clocks are read from a file the test writes: no time is measured."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.service.test_throttle_service import PIN, WRONG, FileClock, enrol
from tests.support.pinutild import AS_NOBODY, PYTHON, ROOT, Pinutild, start_pinutild

NOBODY_UID = 65534
BUDGET = 100  # the default
# pinutild's own main, the delay's and the budget's clocks read from the file argv[1].
_SERVICE_WITH_A_FILE_CLOCK = """
import sys
from pinutil.service import __main__ as service, nv_budget, throttle

path = sys.argv.pop(1)

def clock():
    with open(path) as f:
        return float(f.read())

throttle.Throttle.__init__.__defaults__ = (throttle.MAX_DELAY, clock)
nv_budget.NvBudget.__init__.__defaults__ = (nv_budget.WRITES_PER_HOUR, clock)
sys.exit(service.main(sys.argv[1:]))
"""

# The attacker: argv[2] is a JSON list of requests (bytes as {"hex": ...}), sent in
# turn, again and again, each on its own connection, until one is not answered
# `success` or `wrong_pin` or argv[3] rounds are done; prints the results, one a line,
# and the last reply whole.
_ROUNDS = """
import json, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import client
requests = [{k: bytes.fromhex(v["hex"]) if isinstance(v, dict) else v for k, v in r.items()}
            for r in json.loads(sys.argv[2])]
reply = {}
for _ in range(int(sys.argv[3])):
    for request in requests:
        reply = client.call(sys.argv[1], request, 30)
        print(reply["result"], flush=True)
        if reply["result"] not in ("success", "wrong_pin"):
            print(json.dumps(reply))
            sys.exit(0)
print(json.dumps(reply))
""".replace("ROOT_DIR", repr(ROOT))


def start(pin_env) -> tuple[Pinutild, FileClock]:
    clock = FileClock(os.path.join(pin_env.dir, "clock"))
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "budget.sock"))
    service.argv = [PYTHON, "-c", _SERVICE_WITH_A_FILE_CLOCK, clock.path, *service.argv[3:]]
    service.start()
    return service, clock


def rounds(service, requests: list[dict], times: int, as_user=()) -> tuple[list[str], dict]:
    """The results of `requests` sent `times` over (until one is refused), and the
    last reply, from a process of the caller's uid."""
    encoded = [{k: {"hex": v.hex()} if isinstance(v, bytes) else v for k, v in r.items()}
               for r in requests]
    done = subprocess.run([*as_user, PYTHON, "-I", "-c", _ROUNDS, service.socket,
                           json.dumps(encoded), str(times)], capture_output=True, text=True,
                          timeout=600, cwd="/", env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    *results, last = done.stdout.splitlines()
    return results, json.loads(last)


# Who alternates: the user themselves, a root PAM host (sshd, login) naming them, and
# a root host acting for them (polkit's agent helper: on_behalf_of).
CALLERS = {"own": (AS_NOBODY, {}), "root host": ((), {}),
           "acting for": ((), {"on_behalf_of": NOBODY_UID})}


@pytest.mark.parametrize("caller", CALLERS)
def test_wrong_and_right_pins_in_turn_meet_the_budget(pin_env, caller):
    as_user, extra = CALLERS[caller]
    enrol(pin_env, "nobody", "root")
    service, clock = start(pin_env)
    try:
        check = {"verb": "pin-check", "user": "nobody", **extra}
        pair = [{**check, "pin": WRONG}, {**check, "pin": PIN.encode()}]
        results, refused = rounds(service, pair, 200, as_user)  # 400 writes unbounded
        # 50 pairs are 100 writes (each wrong PIN one, each right one after it one);
        # the 51st wrong PIN is refused, never a delay before it.
        assert results == ["wrong_pin", "success"] * 50 + ["throttled"], results[-3:]
        assert refused == {"result": "throttled", "retry_after": 36, "error": (
            "too many wrong PINs and PIN changes for this account: the TPM's writes "
            "are limited; try again in 36 s") if caller == "own" or extra else
            "too many wrong PINs: try again in 36 s"}
        assert pin_env.counter("nobody") == (0, 10)  # the refused wrong PIN: not sent
        # The right PIN is refused too (it could as well be wrong), and a pin-login
        # before its prompt.
        results, _ = rounds(service, [pair[1]], 1, as_user)
        assert results == ["throttled"]
        login = {"verb": "pin-login", "user": "nobody", **extra}
        assert rounds(service, [login], 1, as_user)[0] == ["throttled"]

        clock.advance(36)  # one write refilled: a wrong PIN goes, then a wait again
        assert rounds(service, pair, 1, as_user)[0] == ["wrong_pin", "throttled"]
        assert pin_env.counter("nobody") == (1, 10)
        clock.advance(36)
        assert rounds(service, [pair[1]], 2, as_user)[0] == ["success", "throttled"]
        assert pin_env.counter("nobody") == (0, 10)
        # Another account's budget is its own.
        assert service.ask(verb="pin-check", user="root", pin=PIN.encode()) == {
            "result": "success"}
        assert service.alive()
    finally:
        service.stop()


def test_changing_ones_pin_back_and_forth_meets_the_budget(pin_env):
    enrol(pin_env, "nobody")
    service, clock = start(pin_env)
    try:
        change = {"verb": "pin-change", "user": "nobody"}
        there_and_back = [{**change, "old_pin": PIN.encode(), "pin": b"5678"},
                          {**change, "old_pin": b"5678", "pin": PIN.encode()}]
        results, refused = rounds(service, there_and_back, 30, AS_NOBODY)
        # Three writes each (define, write, undefine): 34 changes, the last one with
        # a single write left, then the budget is overdrawn to 102.
        assert results == ["success"] * 34 + ["throttled"], results[-3:]
        assert refused["retry_after"] == 3 * 36
        assert pin_env.counter("nobody") == (0, 10)
        clock.advance(3 * 36)  # the PIN the 34th change made logs in again
        assert rounds(service, [{"verb": "pin-check", "user": "nobody", "pin": PIN.encode()}],
                      1, AS_NOBODY)[0] == ["success"]
    finally:
        service.stop()


def test_the_service_does_not_idle_away_a_budget(pin_env):
    """Socket activation ends an idle service, and a restart would refill every budget:
    it stays until they are full again. With 360 writes an hour, a wrong and a right
    PIN (two writes) are refilled after 20 s; the service must outlive the first wait
    (4 s, its idle time being 1 s) and exit within the second. (The wrong PIN's delay
    series ends with the right PIN: only the budget keeps it.)"""
    enrol(pin_env, "root")
    service = start_pinutild(pin_env, "--idle-exit", "1", "--nv-writes-per-hour", "360")
    try:
        assert service.ask(verb="pin-check", user="root", pin=WRONG)["result"] == "wrong_pin"
        assert service.ask(verb="pin-check", user="root", pin=PIN.encode()) == {
            "result": "success"}
        with pytest.raises(subprocess.TimeoutExpired):
            service.proc.wait(timeout=4)
        assert service.proc.wait(timeout=60) == 0
    finally:
        service.stop()
