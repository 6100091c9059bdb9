"""Capture what a PAM transaction sends to syslog, without touching the system.

This machine has no /dev/log and tests must not create one. Instead the command runs
in a private mount namespace (`unshare --mount --propagation private`) in which a
temporary directory is `mount --rbind`-ed over /dev. That directory holds:

- `log`: an AF_UNIX datagram socket bound and read by the test process (glibc's
  syslog() connects to /dev/log, so pam_syslog lands here);
- `null`, `zero`, `random`, `urandom`, `tty`, `full` and `tpmrm0` (when present):
  bind mounts of the real device nodes, so the command still has the devices it
  may need;
- `fd`, `stdin`, `stdout`, `stderr`: the usual symlinks into /proc/self.

The real /dev is untouched: the bind mount exists only inside the namespace and
disappears with its last process. Only root can do this (the suite runs as root);
privileges can still be dropped after the namespace is set up, e.g. by putting
`setpriv` after the prefix.

Usage in a test::

    def test_x(syslog_capture, pam_confdir):
        report = syslog_capture.run_pam(pam_confdir, "svc", ...)
        assert any("hello" in m for m in syslog_capture.messages())

`run_pam` clears earlier lines, runs `tests.support.pamhost.run_pam` with the
namespace prefix, then waits until every datagram the run sent has been read.
`wrap(argv)` gives the prefixed argv for any other command (call `sync()` after).
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import stat
import syslog
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import pamhost

#: LOG_AUTHPRIV as `SyslogLine.facility` holds it (the facility number, without the
#: severity bits): where pam_syslog and pinutil's audit lines go.
AUTHPRIV = syslog.LOG_AUTHPRIV >> 3
#: Device nodes made available inside the namespace's /dev, when they exist.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "tpmrm0", "tpm0")
SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
            "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"}

# Shell run by `unshare` inside the new namespace: bind the prepared tree over /dev,
# then become the real command. "$1" is the prepared directory.
_ENTER = 'set -e; mount --rbind "$1" /dev; shift; exec "$@"'

# "<PRI>Mon DD HH:MM:SS ident[pid]: message" (glibc's syslog(3) wire format).
_LINE = re.compile(r"^<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) ([^:\[]*)(?:\[(\d+)\])?: ?(.*)$", re.DOTALL)


@dataclass(frozen=True)
class SyslogLine:
    """One datagram received on the fake /dev/log."""
    raw: str
    facility: int
    severity: int
    ident: str
    pid: int | None
    message: str

    @classmethod
    def parse(cls, raw: str) -> SyslogLine:
        m = _LINE.match(raw)
        if m is None:
            return cls(raw, -1, -1, "", None, raw)
        pri = int(m.group(1))
        pid = int(m.group(4)) if m.group(4) else None
        return cls(raw, pri >> 3, pri & 7, m.group(3), pid, m.group(5).rstrip("\n"))


class SyslogCapture:
    """A fake /dev/log for commands started through `wrap()` or `run_pam()`."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="pypam-dev-", dir="/tmp")
        os.chmod(self.root, 0o755)
        self._lock = threading.Lock()
        self._lines: list[SyslogLine] = []
        self._syncs: set[str] = set()
        self._cond = threading.Condition(self._lock)
        self._stop = False
        self._sync_serial = 0
        self._populate()
        self.socket_path = os.path.join(self.root, "log")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.socket_path)
        # Hosts dropped to `nobody` must be able to connect too.
        os.chmod(self.socket_path, 0o666)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._reader = threading.Thread(target=self._read, name="syslog-capture", daemon=True)
        self._reader.start()

    # -- setup ------------------------------------------------------------------------
    def _populate(self) -> None:
        for name in DEVICES:
            real = os.path.join("/dev", name)
            try:
                st = os.stat(real)
            except OSError:
                continue
            if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                continue
            # An empty regular file is the mount point; `mount --rbind` below binds the
            # real node onto it inside the namespace only (see wrap()).
            open(os.path.join(self.root, name), "w").close()
        for name, target in SYMLINKS.items():
            os.symlink(target, os.path.join(self.root, name))

    def _bind_devices_script(self) -> str:
        lines = []
        for name in DEVICES:
            point = os.path.join(self.root, name)
            if os.path.isfile(point):
                lines.append(f'mount --bind /dev/{name} "{point}"')
        return "; ".join(lines)

    # -- running ----------------------------------------------------------------------
    def wrap(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs with this capture as its /dev/log."""
        return [*self.prefix, *argv]

    @property
    def prefix(self) -> list[str]:
        """Put before a command (e.g. run_pam(prefix=...)) to capture its syslog."""
        # The device binds happen inside the namespace too, so the temporary tree
        # never holds a mount in the test's own namespace.
        script = f"set -e; {self._bind_devices_script()}; " + _ENTER
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "sh", self.root]

    def run_pam(self, *args: Any, prefix: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
        """pamhost.run_pam inside the namespace; the capture holds only this run's lines."""
        self.clear()
        report = pamhost.run_pam(*args, prefix=[*self.prefix, *prefix], **kwargs)
        self.sync()
        return report

    # -- reading ----------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.2)
            except (OSError, ValueError):
                return
            if self._stop:
                return
            if not ready:
                continue
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                return
            text = data.decode("utf-8", "surrogateescape")
            with self._cond:
                if text.startswith("\0sync:"):
                    self._syncs.add(text)
                else:
                    self._lines.append(SyslogLine.parse(text))
                self._cond.notify_all()

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until every datagram sent so far has been read.

        The socket queue is FIFO: once our own marker datagram comes out, everything a
        finished command sent before it is in `lines()`.
        """
        with self._cond:
            self._sync_serial += 1
            token = f"\0sync:{self._sync_serial}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(token.encode(), self.socket_path)
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._syncs, timeout):
                raise TimeoutError("syslog capture did not drain")
            self._syncs.discard(token)

    def clear(self) -> None:
        """Forget every line captured so far (after draining what is queued)."""
        self.sync()
        with self._cond:
            self._lines.clear()

    def lines(self) -> list[SyslogLine]:
        """Every line captured since the last clear()."""
        with self._cond:
            return list(self._lines)

    def messages(self) -> list[str]:
        """The message part of every captured line."""
        return [line.message for line in self.lines()]

    def text(self) -> str:
        """All messages, one per line (for `in` checks and assertion output)."""
        return "\n".join(self.messages())

    def close(self) -> None:
        self._stop = True
        try:  # wake the reader at once instead of at its next select() timeout
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(b"\0stop", self.socket_path)
        except OSError:
            pass
        self._reader.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def syslog_capture() -> Iterator[SyslogCapture]:
    """A fake /dev/log; run commands with `.run_pam(...)` or `.wrap(argv)`."""
    capture = SyslogCapture()
    try:
        yield capture
    finally:
        capture.close()
