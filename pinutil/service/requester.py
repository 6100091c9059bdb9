"""Whom a root PAM host acts for when it serves one connection on its standard input.

polkit 127 and later run their agent helper socket-activated: systemd accepts each
connection to /run/polkit/agent-helper.socket (mode 0666) and starts
polkit-agent-helper@.service for it, as root (no User=), with the connection as
fd 0. The helper reads the user to authenticate from the connecting agent, any local
user's process, and runs pam_authenticate("polkit-1", that user) before polkitd has
checked anything. Counted as root, every local user could spend and lock every
enrolled user's PIN through it, one guess per connection, and read the attempts left.

So when this process runs as root (real uid 0) and its fd 0 is a connected unix
socket, it acts for the process at the other end: the peer's uid under pinutild's own
rule (pinutil.service.peer: an effective-root peer counts as its real uid, so a set-uid
pkexec that connects counts as the user who ran it; no certain answer is no account).
The PIN rules then apply to that uid (pinutil.users.acting_for): root's peer acts for
anyone, anyone else only for themselves. Any root host of that shape gets the rule,
not only polkit's: an inetd-style unix service that authenticates whichever account
its client names is the same hazard.

A terminal, a pipe, /dev/null, a TCP socket (telnetd's `login -h`: PAM_RHOST tells
those apart) or a listening socket on fd 0 are not a requester: the host acts for
itself, as before. Loaded on every login: it imports nothing until fd 0 is a socket.
"""
from __future__ import annotations

import os
import stat

#: What `stdin_requester` answers when fd 0's peer has no certain uid: no account
#: (pinutil.service.peer.NOBODY_UID), for whom no PIN is ever offered.
UNKNOWN = -1


def may_act_for(requester: int | None, target_uid: int) -> bool:
    """Whether a host acting for `requester` (stdin_requester's answer) may act for the
    account `target_uid`: itself (None) or root's peer for anyone, anyone else only
    for themselves (UNKNOWN for nobody). For what no PIN guards: the master key's token
    (modules/master_key.py); a PIN's rules are pinutil.users's may_test."""
    return requester is None or requester == 0 or requester == target_uid


def stdin_requester() -> int | None:
    """The uid this root process acts for (UNKNOWN: a peer it cannot establish), or
    None when it acts for itself (not root, or fd 0 is no connected unix socket)."""
    if os.getuid() != 0:
        return None
    try:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            return None
    except OSError:
        return None
    return _unix_peer_of_fd0()


def _unix_peer_of_fd0() -> int | None:
    import socket

    from pinutil.service import peer

    fd = os.dup(0)
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return UNKNOWN  # a socket we cannot even look at: fail closed
    try:
        if sock.family != socket.AF_UNIX or sock.type not in (socket.SOCK_STREAM,
                                                              socket.SOCK_SEQPACKET):
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return None  # a listening socket (Accept=no): the host serves many itself
        try:
            sock.getpeername()
        except OSError:
            return None  # not connected: nobody at the other end asked anything
        try:
            return peer.caller_of(sock).uid
        except OSError:
            return UNKNOWN
    finally:
        sock.close()  # our duplicate only: fd 0 stays the host's
