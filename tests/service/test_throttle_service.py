"""The per-user delay after wrong PINs through a real pinutild, swtpm and libpam.

After three wrong PINs in a row a user's next PIN check is refused at once with
`throttled` and never reaches the TPM: the index's counter, read out of band with
tpm2-tools, stays where the wrong PINs left it (a right PIN that reached the TPM
would have reset it). Meanwhile another user logs in. No time is measured: the
service runs with its delay clock read from a file the test writes (the one fake, in
a real service process), so "too early" and "the delay is over" are the test's
choices, not the machine's speed."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from pinutil.service import protocol
from tests.support.accounts import AS_NOBODY
from tests.support.pamhost import PAM_ERROR_MSG, result_name
from tests.support.pinutild import PYTHON, Pinutild, start_pinutild

PIN, WRONG = "1234", b"9999"
LIMIT = 10

# pinutild's own main, with the delay's clock read from the file named by argv[1].
_SERVICE_WITH_A_FILE_CLOCK = """
import sys
from pinutil.service import __main__ as service, throttle

path = sys.argv.pop(1)

def clock():
    with open(path) as f:
        return float(f.read())

throttle.Throttle.__init__.__defaults__ = (throttle.MAX_DELAY, clock)
sys.exit(service.main(sys.argv[1:]))
"""

# The same, and a name service that is slow for one name (SLOW_NAME): its lookups, in
# whichever process of the service makes them, wait until the file argv[1] exists
# (an LDAP or sssd directory timing out, without the time), then find no account.
SLOW_NAME = "slow-directory-user"
_SERVICE_WITH_A_SLOW_NAME = """
import os, pwd, sys, time

release = sys.argv.pop(1)
real_getpwnam = pwd.getpwnam

def getpwnam(name):
    if name == SLOW_NAME:
        for _ in range(12000):  # at most 2 min: a failed test must not hang the suite
            if os.path.exists(release):
                break
            time.sleep(0.01)
        raise KeyError(name)
    return real_getpwnam(name)

pwd.getpwnam = getpwnam
""".replace("SLOW_NAME", repr(SLOW_NAME)) + _SERVICE_WITH_A_FILE_CLOCK


class FileClock:
    def __init__(self, path: str) -> None:
        self.path, self.now = path, 1000.0
        self.advance(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        with open(self.path, "w", encoding="ascii") as f:
            f.write(repr(self.now))


def start(pin_env, *extra: str, slow_name_release: str | None = None,
          ) -> tuple[Pinutild, FileClock]:
    clock = FileClock(os.path.join(pin_env.dir, "clock"))
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "throttled.sock"), extra)
    script = [_SERVICE_WITH_A_FILE_CLOCK] if slow_name_release is None else [
        _SERVICE_WITH_A_SLOW_NAME, slow_name_release]
    service.argv = [PYTHON, "-c", *script, clock.path, *service.argv[3:]]
    service.start()
    return service, clock


def enrol(pin_env, *users: str, limit: int = LIMIT) -> None:
    pin_env.policy_extra["pin_lockout_max_attempts"] = str(limit)
    pin_env.write_policy()
    for user in users:
        done = pin_env.pinutil("--json", "--stdin", "setup", user, stdin=PIN + "\n")
        assert done.returncode == 0, done.stderr
        assert pin_env.counter(user) == (0, limit)


def check(service, user: str, pin: bytes, as_user=()) -> dict:
    return service.ask(as_user=as_user, verb="pin-check", user=user, pin=pin)


def test_a_wrong_pin_then_the_right_one_goes_through_at_once(pin_env):
    enrol(pin_env, "root")
    service, _ = start(pin_env)
    try:
        for _ in range(3):  # never more than two wrong in a row: never a delay
            assert check(service, "root", WRONG)["result"] == "wrong_pin"
            assert check(service, "root", WRONG)["result"] == "wrong_pin"
            assert check(service, "root", PIN.encode()) == {"result": "success"}
        assert pin_env.counter("root") == (0, LIMIT)
    finally:
        service.stop()


def test_after_three_wrong_pins_checks_are_refused_without_the_tpm(pin_env):
    enrol(pin_env, "root", "nobody")
    service, clock = start(pin_env)
    try:
        for left in (9, 8, 7):
            assert check(service, "root", WRONG) == {
                "result": "wrong_pin", "error": f"Incorrect PIN ({left} attempts left)",
                "attempts_left": left}
        for pin in (WRONG, PIN.encode()):  # the right PIN too: it is not asked
            refused = check(service, "root", pin)
            assert refused == {"result": "throttled", "retry_after": 1, "error":
                               "too many wrong PINs: try again in 1 s"}
        assert pin_env.counter("root") == (3, LIMIT)  # neither reached the TPM

        # Meanwhile another user's login goes through, and root is still refused.
        assert check(service, "nobody", PIN.encode(), AS_NOBODY) == {"result": "success"}
        assert check(service, "root", PIN.encode())["result"] == "throttled"
        # Someone else asking about root learns nothing new: the usual refusal.
        assert check(service, "root", WRONG, AS_NOBODY)["result"] == "permission_denied"
        # Status is not a PIN check: always answered.
        assert service.ask(verb="pin-status", user="root")["failures"] == 3

        clock.advance(1)  # the delay is over
        assert check(service, "root", WRONG)["attempts_left"] == 6
        assert check(service, "root", PIN.encode())["retry_after"] == 2  # it doubled
        clock.advance(2)
        assert check(service, "root", PIN.encode()) == {"result": "success"}
        assert pin_env.counter("root") == (0, LIMIT)
        assert check(service, "root", WRONG)["result"] == "wrong_pin"  # a new series
        assert check(service, "root", PIN.encode()) == {"result": "success"}
        assert service.alive()
    finally:
        service.stop()


def test_a_locked_pin_says_locked_not_wait(pin_env):
    """At the TPM's limit the user hears "locked" (what they must do), not a delay."""
    enrol(pin_env, "root", limit=4)
    service, clock = start(pin_env)
    try:
        for _ in range(3):
            assert check(service, "root", WRONG)["result"] == "wrong_pin"
        assert check(service, "root", WRONG)["result"] == "throttled"
        clock.advance(1)
        assert check(service, "root", WRONG)["attempts_left"] == 0
        assert check(service, "root", PIN.encode())["result"] == "locked"
        assert pin_env.counter("root") == (4, 4)
    finally:
        service.stop()


def test_the_pam_module_says_when_to_try_again(pin_env):
    enrol(pin_env, "root")
    service, _ = start(pin_env)
    try:
        pin_env.policy_extra["service_socket"] = service.socket
        pin_env.write_policy()
        svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="daemon"))
        for _ in range(3):
            assert result_name(pin_env.run(svc, user="root", answers=[WRONG.decode()]),
                               "auth") == "PAM_AUTH_ERR"
        report = pin_env.run(svc, user="root", answers=[PIN])
        assert result_name(report, "auth") == "PAM_AUTH_ERR"
        shown = [m["text"] for m in report["messages"] if m["style"] == PAM_ERROR_MSG]
        assert shown == ["Too many wrong PINs: try again in 1 s, or use your password."]
        assert pin_env.counter("root") == (3, LIMIT)
    finally:
        service.stop()


def test_the_service_does_not_idle_away_a_series(pin_env):
    """Socket activation ends an idle service; a restart would forget the wrong PINs,
    so it stays while it keeps a series, and leaves once the right PIN has ended it.
    (No duration is asserted: the first wait is a bound the service must outlive, its
    idle time being 1 s; the second one it must exit within.) Without the NV budget,
    which keeps it too (test_nv_budget_service.py)."""
    enrol(pin_env, "root")
    service = start_pinutild(pin_env, "--idle-exit", "1", "--nv-writes-per-hour", "0")
    try:
        for _ in range(3):
            assert check(service, "root", WRONG)["result"] == "wrong_pin"
        with pytest.raises(subprocess.TimeoutExpired):
            service.proc.wait(timeout=4)
        # The 1 s delay is over by now (the real clock): the right PIN goes through.
        assert check(service, "root", PIN.encode()) == {"result": "success"}
        assert service.proc.wait(timeout=60) == 0  # nothing kept: it leaves
    finally:
        service.stop()


def test_wrong_old_pins_of_a_change_count_like_wrong_logins(pin_env):
    """pin-change and pin-delete try the user's PIN too: their wrong PINs start the same
    delay (on the old code they did not count, an unthrottled way to guess)."""
    enrol(pin_env, "nobody")
    service, _ = start(pin_env)
    try:
        change = {"old_pin": WRONG, "pin": b"5678"}
        for verb, fields in (("pin-change", change), ("pin-delete", {"pin": WRONG}),
                             ("pin-change", change)):
            reply = service.ask(AS_NOBODY, verb=verb, user="nobody", **fields)
            assert reply["result"] == "wrong_pin", reply
        assert pin_env.counter("nobody") == (3, LIMIT)
        for verb, fields in (("pin-check", {"pin": PIN.encode()}),
                             ("pin-delete", {"pin": PIN.encode()})):
            reply = service.ask(AS_NOBODY, verb=verb, user="nobody", **fields)
            assert reply["result"] == "throttled", reply
        assert pin_env.counter("nobody") == (3, LIMIT)
    finally:
        service.stop()


def test_aliases_of_one_account_share_its_series(pin_env):
    """Root's checks of "65534", "065534", ... are nobody's (users.lookup_user, as the
    worker reads them): throttled like "nobody", never fresh attempts at the TPM
    (review F6: on the old code, each alias reached the TPM)."""
    enrol(pin_env, "nobody")
    service, clock = start(pin_env)
    try:
        for _ in range(3):
            assert check(service, "nobody", WRONG)["result"] == "wrong_pin"
        for alias in ("65534", "065534", "0000065534", "nobody"):
            assert check(service, alias, WRONG)["result"] == "throttled", alias
        assert check(service, "nobody", PIN.encode(), AS_NOBODY)["result"] == "throttled"
        assert pin_env.counter("nobody") == (3, LIMIT)
        clock.advance(1)  # a wrong PIN by an alias counts against nobody too
        assert check(service, "065534", WRONG)["attempts_left"] == LIMIT - 4
        assert check(service, "nobody", PIN.encode())["retry_after"] == 2
        clock.advance(2)
        assert check(service, "65534", PIN.encode()) == {"result": "success"}
        assert check(service, "nobody", WRONG)["result"] == "wrong_pin"  # a new series
        assert pin_env.counter("nobody") == (1, LIMIT)
    finally:
        service.stop()


def test_a_slow_name_service_stalls_no_other_client(pin_env):
    """While the name service takes its time over the name in root's PIN check (some
    series being kept), another user's check is still answered: the event loop never
    looks a name up (review F14: on the old code it resolved root's name itself, for
    the delay, and every other client waited for the directory)."""
    enrol(pin_env, "nobody")
    release = os.path.join(pin_env.dir, "release-the-name-service")
    service, _ = start(pin_env, "--tpm-timeout", "120", slow_name_release=release)
    waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for _ in range(3):
            assert check(service, "nobody", WRONG, AS_NOBODY)["result"] == "wrong_pin"
        waiting.connect(service.socket)  # root's check of the slow name: its lookup waits
        waiting.sendall(protocol.encode({"verb": "pin-check", "user": SLOW_NAME,
                                         "pin": WRONG}))
        # Meanwhile nobody's own check is answered (refused: their delay), the name
        # service still stuck.
        reply = check(service, "nobody", PIN.encode(), AS_NOBODY)
        assert reply.get("result") == "throttled", reply
        with open(release, "w", encoding="ascii"):
            pass
        waiting.settimeout(120)
        header = waiting.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
        reply = protocol.decode_body(waiting.recv(protocol.body_length(header),
                                                  socket.MSG_WAITALL))
        assert reply["result"] == "unknown_user", reply  # then: no such account
        assert pin_env.counter("nobody") == (3, LIMIT)
        assert service.alive()
    finally:
        waiting.close()
        service.stop()
