"""`pinutild`: the PIN service (docs/pinutild.md).

    python3 -m pinutil.service [--policy PATH] [--listen PATH] [--idle-exit SECONDS]
                               [--max-prompts N] [--proof PATH] ...

Started by systemd (pinutild.socket): the listening socket is fd 3 (LISTEN_FDS=1 and
LISTEN_PID naming this process, sd_listen_fds(3)). Without them, `--listen PATH`
binds PATH itself (any init system, and the tests); one of the two is required.
"""
from __future__ import annotations

import argparse
import os
import socket
import stat
import sys

from pinutil.pin.policy import DEFAULT_POLICY_PATH
from pinutil.service.no_core import forbid_core_dumps
from pinutil.service.nv_budget import WRITES_PER_HOUR
from pinutil.service.server import LOGIN_ANSWER_SECONDS, MAX_PROMPTS, Limits, Server
from pinutil.service.throttle import MAX_DELAY

SD_LISTEN_FDS_START = 3


def systemd_listener() -> socket.socket | None:
    """The socket systemd passed us, or None when we were not socket-activated. The
    variables are removed so that nothing we start could take them for its own."""
    pid, fds = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or fds is None:
        return None
    if pid != str(os.getpid()):
        return None  # meant for another process (we inherited the environment)
    if fds != "1":
        raise SystemExit(f"pinutild: expected one socket from systemd, got LISTEN_FDS={fds}")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise SystemExit("pinutild: the socket from systemd is not a unix stream socket")
    os.set_inheritable(SD_LISTEN_FDS_START, False)
    return sock


def bound_listener(path: str) -> socket.socket:
    """A unix stream socket listening at `path`, which everyone may connect to (who is
    asking comes from SO_PEERCRED). A stale socket there is replaced, anything else is
    an error."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Mode 0666 from bind() itself: a chmod() by path afterwards could follow a
    # symlink swapped in by whoever else can write to that directory.
    old_umask = os.umask(0o111)
    try:
        sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(128)
    return sock


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pinutild", description="the PIN service")
    parser.add_argument("--policy", default=DEFAULT_POLICY_PATH, help="policy file")
    parser.add_argument("--listen", metavar="PATH", help="bind PATH (without systemd)")
    parser.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                        help="exit after SECONDS without a client (0: never)")
    parser.add_argument("--request-timeout", type=float, default=5.0, metavar="SECONDS",
                        help="longest time a client may take to send its request "
                             "and to read the reply (default 5)")
    parser.add_argument("--tpm-timeout", type=float, default=3.0, metavar="SECONDS",
                        help="longest wait for the TPM per request (default 3)")
    parser.add_argument("--pin-delay-max", type=float, default=MAX_DELAY, metavar="SECONDS",
                        help="the longest delay a user must wait for a PIN check after "
                             f"wrong PINs in a row (default {MAX_DELAY:g}; 0: none)")
    parser.add_argument("--nv-writes-per-hour", type=int, default=WRITES_PER_HOUR,
                        metavar="N",
                        help="each account's budget of TPM NV writes (wrong PINs, the "
                             "right PIN after them, setups, changes, deletes), refilled "
                             f"at N an hour (default {WRITES_PER_HOUR}; 0: no budget)")
    parser.add_argument("--pin-prompt-timeout", type=float, default=LOGIN_ANSWER_SECONDS,
                        metavar="SECONDS",
                        help="longest wait for the PIN a login's prompt asks for (default "
                             f"{LOGIN_ANSWER_SECONDS:g}); then nothing is tried")
    parser.add_argument("--max-prompts", type=_positive, default=MAX_PROMPTS, metavar="N",
                        help="most connections waiting at a prompt at once (default "
                             f"{MAX_PROMPTS}); a login beyond them is refused at once")
    parser.add_argument("--proof", metavar="PATH",
                        help="the root proof process's socket (pinutil-proof), which "
                             "checks the password of a user enrolling their own PIN; "
                             "without it pinutild must run as root and checks it itself")
    args = parser.parse_args(argv)
    if args.nv_writes_per_hour < 0:
        parser.error("--nv-writes-per-hour must be 0 or more")
    listener = systemd_listener()
    if listener is None:
        if not args.listen:
            parser.error("not started by systemd: --listen PATH is required")
        forbid_core_dumps()  # the unit's LimitCORE=0 without systemd; the worker inherits it
        listener = bound_listener(args.listen)
    # No libtss2 settings from whoever started us (TSS2_LOGFILE is a file write); the
    # worker's Tpm() then turns libtss2's logging off in its own copy.
    for name in [k for k in os.environ if k.startswith("TSS2_")]:
        del os.environ[name]
    limits = Limits(request_seconds=args.request_timeout, tpm_seconds=args.tpm_timeout,
                    idle_exit=args.idle_exit, pin_delay_max=args.pin_delay_max,
                    pin_prompt_seconds=args.pin_prompt_timeout, max_prompts=args.max_prompts,
                    nv_writes_per_hour=args.nv_writes_per_hour)
    Server(listener, args.policy, limits, proof_socket=args.proof).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
