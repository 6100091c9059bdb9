"""A client on a root PAM host's stdin, as polkit 127's socket-activated agent helper
gets one (pinutil/service/requester.py): a real process of a chosen identity
(a setpriv prefix) connected to us over an abstract unix socket; `conn` is our end,
to become the host's fd 0 (`preexec=lambda: os.dup2(conn.fileno(), 0)`)."""
from __future__ import annotations

import socket
import subprocess
import sys
import uuid

#: The agent: connect, say nothing, wait until the helper's side closes.
_AGENT = ("import socket, sys\n"
          "s = socket.socket(socket.AF_UNIX)\n"
          "s.connect(b'\\0' + sys.argv[1].encode())\n"
          "s.recv(1)\n")


class Agent:
    """A process of the given identity connected to us; `conn` is our end."""

    def __init__(self, as_user) -> None:
        name = f"pypam-agent-{uuid.uuid4().hex}"
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(b"\0" + name.encode())  # abstract: reachable by any uid
        self.listener.listen(1)
        self.proc = subprocess.Popen([*as_user, sys.executable, "-I", "-c", _AGENT, name],
                                     stdin=subprocess.DEVNULL, cwd="/",
                                     env={"PATH": "/usr/bin:/bin"})
        self.listener.settimeout(60)
        self.conn, _ = self.listener.accept()

    def close(self) -> None:
        self.conn.close()  # the agent's recv ends: it exits
        self.listener.close()
        self.proc.wait(timeout=60)
