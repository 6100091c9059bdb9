"""A command on a terminal of its own: run it as the leader of a new session whose
controlling terminal is a pseudo-terminal, answer its prompts, keep what it showed.
For what only happens on a terminal: prompts on /dev/tty, echo off."""
from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Sequence


def answer_on_terminal(argv: Sequence[str], answers: Sequence[str], env: dict[str, str],
                       cwd: str = "/", timeout: float = 60) -> tuple[int, bytes]:
    """Run `argv` (PATH from `env` finds argv[0]); each time what the terminal shows
    ends with ':' while answers are left, type the next one and Enter. Returns the exit
    code and everything the terminal showed, with `<answered>` where an answer went."""
    pid, fd = pty.fork()
    if pid == 0:  # child: a new session whose controlling terminal is the pty
        try:
            os.chdir(cwd)
            os.execvpe(argv[0], list(argv), env)
        finally:
            os._exit(127)
    shown, pending = b"", list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if pending and shown.rstrip().endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
            shown += b"<answered>"
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown
