"""Throw-away minimal Debian roots for tests that install packages (never the machine).

The base root of a suite is a pristine `debootstrap --variant=minbase` root cached
under /var/cache/pypam-test-distros/SUITE, the cache of `make test-distros`
(tests/distros/run), with its conventions: SUITE.stamp marks a complete root, which is
rebuilt (SUITE.new, then renamed) when the stamp is older than 7 days, all under an
flock on /var/cache/pypam-test-distros/lock. `DebianRoot` holds that lock while it
makes sure of the base root and copies it; nothing writes into the cache except
downloaded packages (SUITE.apt-archives-package-tests).

`DebianRoot.run()` runs a command chrooted in that copy inside a private mount
namespace (`unshare -m`), with /proc, /sys and /dev mounted there only: the mounts
vanish with the command, so a crashed test leaves no mount behind on the host.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from typing import Any, Self

CACHE_DIR = "/var/cache/pypam-test-distros"
MAX_AGE_DAYS = 7
MIRROR = "http://deb.debian.org/debian"
# What apt and pip inside the root need from the host (sources, proxies, CA bundle).
_HOST_FILES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/apt.conf.d",
               "/etc/apt/auth.conf.d", "/etc/ssl/certs/ca-certificates.crt",
               "/etc/pip.conf", "/etc/resolv.conf")
# A container's apt setting that deletes downloaded packages: it would empty the cache.
_HOST_FILES_SKIPPED = ("/etc/apt/apt.conf.d/docker-clean",)


def run_captured(command: list[str], *, shown: list[str], where: str, check: bool = True,
                 **kwargs: Any) -> subprocess.CompletedProcess:
    """`command` run with stdout and stderr captured, returned as text (undecodable bytes
    replaced). With `check`, a non-zero exit raises AssertionError naming `shown` (the
    command as the test wrote it, without what enters the root) and `where` it ran, with
    the end of both outputs. The one runner of DebianRoot and BootedRoot."""
    result = subprocess.run(command, capture_output=True, check=False, **kwargs)
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(errors="replace"),
                                      result.stderr.decode(errors="replace"))
    if check and out.returncode != 0:
        raise AssertionError(f"{shown} failed ({out.returncode}) in {where}:\n"
                             f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


def _ensure_base_root(suite: str) -> str:
    """The cached root of `suite`, (re)built if missing or stale; the lock is held."""
    root, stamp = os.path.join(CACHE_DIR, suite), os.path.join(CACHE_DIR, f"{suite}.stamp")
    try:
        fresh = time.time() - os.stat(stamp).st_mtime < MAX_AGE_DAYS * 86400
    except FileNotFoundError:
        fresh = False
    if fresh and os.path.isdir(root):
        return root
    building = root + ".new"
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", suite, building, MIRROR],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shutil.rmtree(root, ignore_errors=True)
    os.rename(building, root)
    open(stamp, "w").close()
    return root


class DebianRoot:
    """A private copy of a cached base root; `with DebianRoot() as r: r.run([...])`."""

    def __init__(self, suite: str = "bookworm") -> None:
        self.suite = suite
        self.path = ""

    def __enter__(self) -> Self:
        self.path = tempfile.mkdtemp(prefix=f"pypam-{self.suite}-", dir="/var/tmp")
        os.makedirs(CACHE_DIR, mode=0o755, exist_ok=True)
        with open(os.path.join(CACHE_DIR, "lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # test-distros may be refreshing the root
            base = _ensure_base_root(self.suite)
            subprocess.run(["cp", "-a", "--reflink=auto", base + "/.", self.path], check=True)
        for host_path in _HOST_FILES:
            if os.path.exists(host_path):
                target = self.path + host_path
                if os.path.isdir(host_path):
                    shutil.copytree(host_path, target, dirs_exist_ok=True,
                                    ignore=lambda d, names: [
                                        n for n in names
                                        if os.path.join(d, n) in _HOST_FILES_SKIPPED])
                else:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(host_path, target, follow_symlinks=True)
        # No service starts inside the root (udev's postinst would try).
        policy_rc = self.path + "/usr/sbin/policy-rc.d"
        with open(policy_rc, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy_rc, 0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run `argv` as root inside the root; stdout and stderr captured as text."""
        root = self.path
        archives = os.path.join(CACHE_DIR, f"{self.suite}.apt-archives-package-tests")
        os.makedirs(os.path.join(archives, "partial"), exist_ok=True)
        # Downloaded packages are kept between runs. Not test-distros' directory: apt
        # refuses (does not wait) when another apt holds an archives directory's lock.
        mounts = (f"mount --bind {root} {root} && mount -t proc proc {root}/proc && "
                  f"mount --bind {archives} {root}/var/cache/apt/archives && "
                  f"mount --rbind /sys {root}/sys && mount --rbind /dev {root}/dev && "
                  f'exec chroot {root} "$@"')
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        full_env.update(env or {})
        return run_captured(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", mounts, "sh", *argv],
            shown=argv, where=root, check=check, input=input, env=full_env)

    def files(self, exclude: tuple[str, ...]) -> set[str]:
        """Every path in the root with its mode and owner (and the content's hash for
        files under /etc), except paths under `exclude`."""
        found = set()
        for directory, dirs, names in os.walk(self.path):
            rel_dir = "/" + os.path.relpath(directory, self.path).removeprefix(".")
            dirs[:] = [d for d in dirs
                       if not os.path.join(rel_dir, d).startswith(exclude)]
            for name in dirs + names:
                rel = os.path.join(rel_dir, name)
                st = os.lstat(os.path.join(directory, name))
                entry = f"{rel} {st.st_mode:o} {st.st_uid}:{st.st_gid}"
                if rel.startswith("/etc/") and stat.S_ISREG(st.st_mode):
                    with open(os.path.join(directory, name), "rb") as f:
                        entry += " " + hashlib.sha256(f.read()).hexdigest()[:16]
                found.add(entry)
        return found
