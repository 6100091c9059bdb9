"""Who is asking pinutild: the kernel's word (SO_PEERCRED), never anything the client says.

SO_PEERCRED gives the peer's pid and its EFFECTIVE uid and gid at connect(). A set-uid
root host (su, sudo, polkit-agent-helper-1) thus arrives as uid 0 although a user
started it and chose whom it authenticates: `su victim`, typed wrong PINs, would lock
any enrolled user's PIN. So a peer with effective uid 0 counts as root only if its real
uid (from /proc/PID/status) is 0 too, and otherwise as its real uid, which is the
rule the set-gid `pinutil` helper has always applied (the real uid is who asked). This
can only ever lower what SO_PEERCRED alone would grant (a reused pid yields some other
process's real uid; root at most, which the effective uid already gave), and an
unreadable status fails closed to "no account at all".
"""
from __future__ import annotations

import socket
import struct

from pinutil.users import ROOT_UID, User

_UCRED = struct.Struct("=iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
#: The caller when a root peer's real uid cannot be read: matches no account, not root.
NOBODY_UID = -1


class Peer:
    """A connected client: the pid and effective ids the kernel recorded at connect()."""

    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid


def peer_of(sock: socket.socket) -> Peer:
    """The kernel's credentials of the process at the other end of `sock`."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                  _UCRED.size))
    return Peer(pid, uid, gid)


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def caller_of(peer: Peer) -> User:
    """The account the rules of pinutil.users apply to (see the module docstring). Only
    the uid counts for them; the name is for messages."""
    uid = peer.uid
    if uid == ROOT_UID:
        real = _real_uid(peer.pid)
        uid = NOBODY_UID if real is None else real
    return User(f"uid {uid}", uid)
