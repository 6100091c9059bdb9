"""pinutild's caller: a root peer's real uid is read through a pidfd, so a peer that
has exited (its /proc entry gone, or its pid given to another process) counts as no
account, never as the process that now holds its pid.

Real processes, real sockets: each case runs in a fresh pid namespace (unshare), where
the test can hand a dead peer's pid to a new root process (ns_last_pid) before the
service-side code reads it. Both ways of pinning the peer are tested: the kernel's
SO_PEERPIDFD (Linux 6.5+; this machine's kernel has it) and the fallback for older
kernels (pidfd_open, forced by naming a socket option the kernel does not know)."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from pinutil.service import peer
from tests.support.pinutild import PYTHON, ROOT

NOBODY = 65534

# Runs as pid 1 of a new pid namespace. The peer connects with effective uid 0 and the
# real uid argv[2] (what `su` is), then: "alive" (stays connected), "exits" (exits and
# is reaped), "reused" (exits, is reaped, and a root process gets its pid), "handed"
# (gives its connection to a child of its own, exits, its pid reused by root).
_CASE = """
import json, os, socket, sys, tempfile
sys.path.insert(0, ROOT_DIR)
from pinutil.service import peer
case, ruid, fallback = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fallback"
if fallback:
    peer.SO_PEERPIDFD = 0x7fff  # a socket option no kernel knows: ENOPROTOOPT
path = os.path.join(tempfile.mkdtemp(), "s")
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen()
ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setresuid(ruid, 0, 0)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if case == "handed" and os.fork() == 0:  # keeps the connection open, then waits
        os.write(ready_w, b"x")
        os.read(go_r, 1)
        os._exit(0)
    if case != "handed":
        os.write(ready_w, b"x")
    if case == "alive":
        os.read(go_r, 1)
    os._exit(0)
conn, _ = listener.accept()
os.read(ready_r, 1)
holder = None
if case != "alive":
    os.waitpid(pid, 0)  # the peer is gone, its pid free
if case in ("reused", "handed"):
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    holder = os.fork()
    if holder == 0:  # a root process on the peer's pid
        os.read(go_r, 1)
        os._exit(0)
    assert holder == pid, (holder, pid)
caller = peer.caller_of(conn)
os.write(go_w, b"xxx")
print(json.dumps({"uid": caller.uid}))
""".replace("ROOT_DIR", repr(ROOT))


def resolve(case: str, ruid: int, pinning: str) -> int:
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-I", "-c",
                           _CASE, case, str(ruid), pinning],
                          capture_output=True, text=True, timeout=60, check=False, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["uid"]


@pytest.mark.parametrize("pinning", ["kernel", "fallback"])
def test_a_live_peer_counts_as_its_real_uid(pinning):
    assert resolve("alive", NOBODY, pinning) == NOBODY  # `su`: the user who ran it
    assert resolve("alive", 0, pinning) == 0  # root really


@pytest.mark.parametrize("pinning", ["kernel", "fallback"])
@pytest.mark.parametrize("case", ["exits", "reused"])
def test_a_peer_that_left_counts_as_no_account(case, pinning):
    """"reused": the old code read the new root process's status and took the user
    who ran `su` for root."""
    assert resolve(case, NOBODY, pinning) == -1


def kernel_gives_peer_pidfds() -> bool:
    a, b = socket.socketpair()
    with a, b:
        try:
            os.close(a.getsockopt(socket.SOL_SOCKET, peer.SO_PEERPIDFD))
            return True
        except OSError:
            return False


def test_a_peer_that_handed_its_connection_on_counts_as_no_account():
    """The kernel's pidfd names the process that connected, whoever holds the
    connection now. Older kernels cannot tell this case (the fallback's documented
    limit, docs/pinutild.md): there is nothing to test there, and this machine's
    kernel must have it."""
    if not kernel_gives_peer_pidfds():
        pytest.skip(f"Linux {os.uname().release} has no SO_PEERPIDFD (6.5+)")
    assert resolve("handed", NOBODY, "kernel") == -1
