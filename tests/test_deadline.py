"""pinutil/deadline.py on its own: what a forked TPM worker can answer, and that every
way it can fail is a failure (never a result), within one budget."""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
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


def test_a_hung_worker_is_killed_and_the_budget_is_spent_once(monkeypatch):
    budget = TpmBudget(1)
    started = time.monotonic()
    with pytest.raises(errors.TpmUnavailable, match="did not answer"):
        run_in_child(budget, _hang)
    assert time.monotonic() - started < 1 + 5  # generous: a loaded machine
    assert budget.left <= 0

    def no_fork():
        pytest.fail("a spent budget must fail at once, without starting a worker")

    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(errors.TpmUnavailable, match="this login's 1 s"):
        run_in_child(budget, _value)


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


# A host that reaps whatever exited (our worker too) and then starts a child of its
# own that gets the worker's pid: run in a new pid namespace, where ns_last_pid makes
# the reuse certain rather than a matter of luck. The worker tells the host (SIGUSR1)
# just before it exits, so the host's handler runs, waits for it and reaps it before
# run_in_child can: a SIGCHLD handler would race run_in_child's own wait (poll sees
# the pidfd readable as the child exits, the signal comes a moment later) and, if the
# host's child exited before the handler recorded it, run again for that child.
_PID_REUSE_HOST = """
import os, signal, sys
sys.path[:0] = [sys.argv[1]]
from pinutil.deadline import TpmBudget, run_in_child

host_children = []

def reap_and_fork(signum, frame):
    worker, _ = os.waitpid(-1, 0)  # the worker, which exits right after telling us
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(worker - 1))
    child = os.fork()
    if child == 0:
        os._exit(42)
    host_children.append((worker, child))

def work_then_tell_the_host():
    os.kill(os.getppid(), signal.SIGUSR1)
    return 7

signal.signal(signal.SIGUSR1, reap_and_fork)
try:
    result = run_in_child(TpmBudget(10), work_then_tell_the_host)
except BaseException as e:
    result = type(e).__name__
own = []
for worker, child in host_children:
    try:
        own.append((worker == child, os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])))
    except ChildProcessError:
        own.append((worker == child, "stolen"))
print(repr((result, own)))
"""


def test_a_reused_pid_never_takes_the_host_childs_status():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                           "-c", _PID_REUSE_HOST, root],
                          capture_output=True, text=True, timeout=60, check=True)
    result, own = ast.literal_eval(done.stdout)
    # The host's child did get the worker's pid (the case under test), keeps its exit
    # status for the host, and the worker's answer still counts.
    assert own == [(True, 42)], done.stdout
    assert result == 7


# A Python host (python-pam, pamela) with a signal handler of its own, and a signal that
# reaches the worker too (the terminal signals the whole process group): here sent by
# an at-fork hook, so it arrives at the worker's first instant, deterministically.
_HOST_WITH_HANDLER = """
import os, signal, sys
sys.path[:0] = [sys.argv[1]]
from pinutil.deadline import TpmBudget, run_in_child

host, ran_in = os.getpid(), sys.argv[2]

class HostSignal(Exception):
    pass

def handler(signum, frame):
    with open(ran_in, "a") as f:
        f.write(f"{os.getpid() == host}\\n")
    raise HostSignal

signal.signal(signal.SIGUSR1, handler)
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGUSR1))
try:
    print(repr((os.getpid() == host, run_in_child(TpmBudget(10), int, 7))), flush=True)
except BaseException as e:
    print(repr((os.getpid() == host, type(e).__name__)), flush=True)
"""


def test_the_hosts_signal_handlers_never_run_in_the_worker(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ran_in = tmp_path / "handler_ran_in"
    done = subprocess.run([sys.executable, "-c", _HOST_WITH_HANDLER, root, str(ran_in)],
                          capture_output=True, text=True, timeout=60, check=True)
    # Neither the host's handler ran in the worker, nor did an exception raised there
    # carry the worker on as a second copy of the host (printing here, say).
    assert not ran_in.exists()
    assert [ast.literal_eval(line) for line in done.stdout.splitlines()] == [(True, 7)]


def test_a_fork_that_raises_leaves_the_signal_mask_and_fds_as_they_were(monkeypatch):
    def no_fork():
        raise RuntimeError("fork not supported for isolated subinterpreters")

    before_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    before_fds = sorted(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", no_fork)
    with pytest.raises(RuntimeError):
        run_in_child(TpmBudget(10), int, 7)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before_mask
    assert sorted(os.listdir("/proc/self/fd")) == before_fds
