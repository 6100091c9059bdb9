"""pinutil/deadline.py on its own: what a forked TPM worker can answer, and that every
way it can fail is a failure (never a result), within one budget."""
from __future__ import annotations

import os
import signal
import time

import pytest

from pinutil import errors
from pinutil.deadline import TpmBudget, login_budget, run_in_child


def _value():
    return {"enrolled": True, "failures": 2}


def _raise(error):
    raise error


def _exit_silently():
    os._exit(0)  # exits 0 without writing an answer


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _hang():
    time.sleep(60)


def _print_everywhere():
    for fd in (0, 1, 2):
        try:
            os.write(fd, b"libtss2 would say this\n")
        except OSError:
            pass
    return True


def test_a_value_crosses_back():
    assert run_in_child(TpmBudget(10), _value) == {"enrolled": True, "failures": 2}


@pytest.mark.parametrize("error", [errors.NotEnrolled("no PIN"), errors.PinLocked("locked"),
                                   errors.TpmUnavailable("gone"), errors.InvalidPin("bad")])
def test_a_domain_error_crosses_back_as_itself(error):
    with pytest.raises(type(error), match=str(error)):
        run_in_child(TpmBudget(10), _raise, error)


def test_a_wrong_pin_keeps_its_attempts_left():
    with pytest.raises(errors.WrongPin) as caught:
        run_in_child(TpmBudget(10), _raise, errors.WrongPin(2))
    assert caught.value.attempts_left == 2


def test_a_bug_in_the_worker_is_not_a_domain_answer():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_in_child(TpmBudget(10), _raise, ZeroDivisionError("x"))


@pytest.mark.parametrize("worker", [_exit_silently, _die], ids=["silent_exit_0", "killed"])
def test_a_worker_without_an_answer_is_unavailable(worker):
    with pytest.raises(errors.TpmUnavailable):
        run_in_child(TpmBudget(10), worker)


def test_a_hung_worker_is_killed_and_the_budget_is_spent_once():
    budget = TpmBudget(1)
    started = time.monotonic()
    with pytest.raises(errors.TpmUnavailable, match="did not answer"):
        run_in_child(budget, _hang)
    assert time.monotonic() - started < 1 + 5  # generous: a loaded machine
    assert budget.left <= 0
    started = time.monotonic()
    with pytest.raises(errors.TpmUnavailable, match="this login's 1 s"):
        run_in_child(budget, _value)  # no fork at all: at once
    assert time.monotonic() - started < 0.5


def test_the_worker_writes_nothing_to_the_host_fds_0_2(capfd):
    assert run_in_child(TpmBudget(10), _print_everywhere) is True
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_a_host_that_ignores_sigchld_still_gets_answers_and_failures():
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        assert run_in_child(TpmBudget(10), _value)["failures"] == 2
        with pytest.raises(errors.TpmUnavailable):
            run_in_child(TpmBudget(10), _die)
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_one_budget_per_login_dict():
    login: dict = {}
    first = login_budget(login, 3)
    assert login_budget(login, 10) is first and first.seconds == 3
