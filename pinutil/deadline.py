"""Bound the TPM work of one login: one time budget, spent in short-lived children.

Neither tcti-swtpm nor the synchronous Esys calls honour a timeout (tpm2-tss 3.2.1:
see tpm.py), so a TPM call can block for as long as the TPM hangs. `run_in_child`
therefore runs each piece of TPM work in a forked child (no exec: it inherits the
imported modules) and kills it when the budget runs out. Cost: ~2.5 ms of CPU per
child in a 13 MB PAM host on a 2-core VM, mostly page faults (copy-on-write, and the
child mapping its libraries' pages again), ~5 ms per PIN login. Compared with a worker
thread in the host, as before:

- a hung call ends with its process: nothing is left holding a TPM connection. An
  abandoned thread kept its connection open, and tcti-device and tcti-swtpm open their
  fds without O_CLOEXEC, so the host's next fork+exec (a login starting the user's
  session) handed the user a raw TPM connection;
- the host never holds a TPM fd at all, and never has its environment touched:
  `Tpm()` turns libtss2's logging off through the environment (tpm.py), and that now
  happens in the child's copy only (`setenv` in a worker thread raced `getenv` in the
  host's threads, and the host's children inherited TSS2_LOG);
- the child's fds 0-2 are /dev/null and it keeps no other fd of the host's but its
  result pipe, so nothing libtss2 prints reaches the host's terminal or network
  (`sshd -i`), and no host pipe is held open by a child the host does not know about;
- the child runs with every signal blocked, so a signal to the host's process group
  never runs the host's handlers in it (SIGKILL, the budget's end, still works).

One budget per login (`TpmBudget`, kept on the PAM handle by the modules): the PIN
module's status and check and master_key's token all draw from it, so a hung TPM
costs a login at most the budget in total, not a timeout per call. Only time spent
waiting for children counts (not the user's typing). Once a call has used it up, the
next ones fail at once without forking.

A child killed after sending a PIN may have had the attempt counted; the caller gets
`TpmUnavailable` and never resends the PIN (one attempt per login).

Fail closed: a result counts only if the child wrote one complete message and (when
its status can be read: a host ignoring SIGCHLD reaps its children itself) exited 0.
Anything else is `TpmUnavailable`, or, for an unexpected exception in the child, a
`RuntimeError` naming it (a bug, logged with its traceback by the dispatcher).
"""
from __future__ import annotations

import _signal  # the builtin behind `signal`, without its enum wrapper (the shim has it)
import marshal
import os
from time import monotonic

from pinutil import errors

_MAX_MESSAGE = 64 * 1024  # fits the pipe: the child never blocks writing it
_KILL_GRACE_S = 0.2  # a child in a device read may take a moment to die; never waited for long


class TpmBudget:
    """The TPM time one login may still spend, in seconds (mutable on purpose)."""

    __slots__ = ("left", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left = seconds


def login_budget(login_data: dict, seconds: float) -> TpmBudget:
    """The login's budget, made on first use. `login_data` is a dict that lives as long
    as the login (the PAM handle) and is shared by all its modules; the first module
    to ask sets its size."""
    budget = login_data.get("tpm_budget")
    if budget is None:
        budget = login_data["tpm_budget"] = TpmBudget(seconds)
    return budget


def spend(budget: TpmBudget, function, *args):
    """`function(seconds_left, *args)`, its time taken off `budget`; TpmUnavailable at
    once, without calling it, when nothing is left."""
    if budget.left <= 0:
        raise errors.TpmUnavailable(
            f"the TPM did not answer within this login's {budget.seconds:g} s")
    started = monotonic()
    try:
        return function(budget.left, *args)
    finally:
        budget.left -= monotonic() - started


def run_in_child(budget: TpmBudget, function, *args):
    """`function(*args)` in a forked child within what is left of `budget`; its result
    (a value marshal can carry) or its domain error. TpmUnavailable when the budget is
    spent (the child is then killed)."""
    return _decode(spend(budget, _run, function, args))


def _run(seconds: float, function, args) -> bytes:
    import select  # a small builtin extension; only the TPM path needs it

    read_end, write_end = os.pipe()  # close-on-exec (PEP 446)
    go_read, go_write = os.pipe()
    # Every signal blocked across the fork, and in the child for good: a signal to the
    # host's process group (a terminal's Ctrl-C) reaches the worker too, and must not
    # run the host's handlers in it (C or Python: one that cleans up and exits, or
    # raises into what would go on as a second copy of the host). SIGKILL still ends it.
    blocked = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException as e:  # no child: the host's mask and fds as they were
        _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
        for fd in (read_end, write_end, go_read, go_write):
            os.close(fd)
        if isinstance(e, OSError):
            raise errors.TpmUnavailable(f"cannot start the TPM worker: {e.strerror}") from None
        raise
    if pid == 0:
        _child(go_read, go_write, write_end, function, args)  # never returns
    _signal.pthread_sigmask(_signal.SIG_SETMASK, blocked)
    for fd in (write_end, go_read):
        os.close(fd)
    try:
        # A pidfd, not the pid: a host that ignores SIGCHLD (or reaps every child
        # itself) frees the pid at exit, and a signal sent by pid could hit a stranger.
        # The child waits until we close `go_write`, so it cannot be gone (and its pid
        # reused) before we hold the pidfd; without one (a sandbox refusing
        # pidfd_open) it is killed while it still waits, before it reaches the TPM.
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        _kill_waiting(pid)
        os.close(go_write)
        os.close(read_end)
        raise errors.TpmUnavailable(f"cannot watch the TPM worker: {e.strerror}") from None
    os.close(go_write)  # go (EOF: nothing written, so no SIGPIPE can reach the host)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)  # readable once the child has exited
    reaped = False
    try:
        if not poller.poll(max(1, int(seconds * 1000))):
            raise errors.TpmUnavailable(f"the TPM did not answer within {seconds:.3g} s")
        os.set_blocking(read_end, False)
        try:
            message = os.read(read_end, _MAX_MESSAGE)
        except BlockingIOError:
            message = b""
        reaped = True
        if not _exited_cleanly(pidfd):
            raise errors.TpmUnavailable("the TPM worker failed")
        return message
    except OSError as e:  # poll or read failed: we cannot know what the child did
        raise errors.TpmUnavailable(f"cannot wait for the TPM worker: {e.strerror}") from None
    finally:
        if not reaped:
            _kill(pidfd, pid, poller)
        os.close(pidfd)
        os.close(read_end)


def _kill(pidfd: int, pid: int, poller) -> None:
    try:
        _signal.pidfd_send_signal(pidfd, _signal.SIGKILL)
        # Reap it if it is gone by now; a child stuck in an uninterruptible device read
        # is left to die later rather than blocking the login (it holds no host resource).
        if poller.poll(int(_KILL_GRACE_S * 1000)):
            _exited_cleanly(pidfd)
    except OSError:
        pass


def _kill_waiting(pid: int) -> None:
    """Kill and reap a child that has not been told to go (so its pid is its own)."""
    try:
        os.kill(pid, _signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass


def _exited_cleanly(pidfd: int) -> bool:
    """Reap the child, which has exited (its pidfd is readable, so this does not block);
    True if it exited 0 or its status is not ours to read (the host reaped it).

    By pidfd, never by pid: once a host's SIGCHLD handler has reaped our child, its pid
    may already belong to a child of the host's own, and waitpid(pid) would take that
    child's exit status (and could block until it exits)."""
    try:
        found = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        return True
    if found is None:  # pragma: no cover - only with WNOHANG
        return True
    return found.si_code == os.CLD_EXITED and found.si_status == 0


def _child(go_read: int, go_write: int, write_end: int, function, args) -> None:
    """The forked child (every signal blocked): wait for the parent's go, detach from
    the host's fds, do the work, write the outcome, and leave with _exit (no atexit
    handlers, no flush of the host's stdio buffers)."""
    code = 1
    try:
        os.close(go_write)
        os.read(go_read, 1)  # until the parent closes its end: it then holds our pidfd
        _detach_from_host_fds(write_end)
        message = _outcome(function, args)
        if len(message) <= _MAX_MESSAGE and os.write(write_end, message) == len(message):
            code = 0
    finally:
        os._exit(code)


def _detach_from_host_fds(keep: int) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        if null != fd:
            os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)  # one close_range(2) call


def _outcome(function, args) -> bytes:
    try:
        return marshal.dumps(("ok", function(*args)))
    except errors.PinutilError as e:  # crosses the pipe as pinutil's JSON fields would
        return marshal.dumps(("error", e.json_fields()))
    except BaseException as e:  # noqa: BLE001 - a bug: reported to the caller by name
        return marshal.dumps(("bug", f"{type(e).__name__}: {str(e)[:200]}"))


def _decode(message: bytes):
    try:
        outcome = marshal.loads(message)
    except (EOFError, ValueError, TypeError):
        outcome = None
    if not isinstance(outcome, tuple) or len(outcome) != 2 or not isinstance(outcome[0], str):
        raise errors.TpmUnavailable("the TPM worker gave no usable answer")
    kind, value = outcome
    if kind == "ok":
        return value
    if kind == "error" and isinstance(value, dict):
        raise errors.from_json(value)
    if kind == "bug":
        raise RuntimeError(f"the TPM worker failed: {value}")
    raise errors.TpmUnavailable("the TPM worker gave no usable answer")
