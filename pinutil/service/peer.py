"""Who is asking pinutild: the kernel's word (SO_PEERCRED), never anything the client says.

SO_PEERCRED gives the peer's pid and its EFFECTIVE uid and gid at connect(). A set-uid
root host (su, sudo, polkit-agent-helper-1) thus arrives as uid 0 although a user
started it and chose whom it authenticates: `su victim`, typed wrong PINs, would lock
any enrolled user's PIN. So a peer with effective uid 0 counts as root only if its real
uid (from /proc/PID/status) is 0 too, and otherwise as its real uid, which is the
rule the set-gid `pinutil` helper has always applied (the real uid is who asked).

A pid is only a number: the peer may exit and its pid be given to another process
(a root daemon, say) before the status is read, and that process's real uid would be
taken for the peer's. So the status is read through a pidfd, which names one process
for as long as it lives, and is believed only if that process is still alive after
the read (until then its pid cannot be reused):
- SO_PEERPIDFD (Linux 6.5 and later): the kernel's pidfd of the very process that
  connected. A peer that has exited meanwhile yields a dead pidfd: no account.
- Older kernels: pidfd_open(pid) after the fact, which names whatever process holds
  the pid now. It is believed only if, besides, our end of the connection is not hung
  up: a reused pid means the peer exited, and its exit closed the connection unless
  it had passed the connection on to another process (a set-uid root program would
  have to do that, and ours do not); docs/pinutild.md states this limit.
Every failure (no pidfd, no status, a dead process, a hung-up connection) fails
closed to "no account at all", never to root or to the effective uid.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import struct

from pinutil.users import ROOT_UID, User

_UCRED = struct.Struct("=iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
#: <asm-generic/socket.h>; Python 3.11's socket module does not name it.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
#: The caller when a root peer's real uid cannot be established: no account, not root.
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


def caller_of(sock: socket.socket) -> User:
    """The account the rules of pinutil.users apply to (see the module docstring). Only
    the uid counts for them; the name is for messages. OSError: no credentials."""
    peer = peer_of(sock)
    uid = peer.uid
    if uid == ROOT_UID:
        real = real_uid(sock, peer.pid)
        uid = NOBODY_UID if real is None else real
    return User(f"uid {uid}", uid)


def real_uid(sock: socket.socket, pid: int) -> int | None:
    """The real uid of the process that connected `sock` (SO_PEERCRED's `pid`), or None
    when it cannot be established for certain."""
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        pinned_by_kernel = True
    except OSError as e:
        if e.errno != errno.ENOPROTOOPT:  # e.g. ESRCH: the peer is gone
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        pinned_by_kernel = False
    try:
        if pinned_by_kernel and _pid_of(pidfd) != pid:
            return None  # exited (the kernel says -1), or not the pid SO_PEERCRED gave
        uid = _status_real_uid(pid)
        if uid is None or _has_exited(pidfd):
            return None  # the read may have been of a process that took over the pid
        if not pinned_by_kernel and _hung_up(sock):
            return None
        return uid
    finally:
        os.close(pidfd)


def _pid_of(pidfd: int) -> int | None:
    """The pid a pidfd names in our pid namespace (-1 once the process has exited)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}", "rb") as f:
            for line in f:
                if line.startswith(b"Pid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _status_real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _has_exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (zombie or reaped)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _hung_up(sock: socket.socket) -> bool:
    """Both directions of the connection closed: the peer end has no process left."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))
