"""A DebianRoot booted with systemd as its PID 1 (`systemd-nspawn --boot`), for tests of
the units under a real service manager rather than a stand-in.

The host's own PID 1 need not be systemd (CI's is not): nspawn runs without asking a
host systemd for a scope (`--register=no --keep-unit`), in cgroups of its own that
this class makes (under the caller's, in the cgroup2 hierarchy and, on a hybrid host,
in the name=systemd one) and removes, so that two containers never share one and none
is left behind. The container gets a cgroup2 hierarchy of its own
(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1, as Debian 12 boots), and CAP_BPF with the bpf()
system call: systemd enforces DevicePolicy=/DeviceAllow= with BPF programs there, and
without them silently enforces nothing (checked on this host: a DevicePolicy=closed
unit opened /dev/net/tun).

`run()` runs a command inside with every namespace of the container (nsenter), as
root; the container's console goes to `log`. Leaving the `with` powers the system
off (SIGTERM to nspawn, as `machinectl poweroff` would), and checks that no process,
mount or cgroup of it is left.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Self

from tests.support.debian_root import DebianRoot, run_captured

BOOT_SECONDS = 120
POWEROFF_SECONDS = 60
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _cgroup_parents() -> list[str]:
    """Where this process's cgroups are, in the hierarchies nspawn uses: the cgroup2
    one, and the name=systemd one on a hybrid host (its layout here)."""
    mine = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            mine["cgroup2" if number == "0" else controllers] = path
    parents = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point, kind = fields[4], fields[fields.index("-") + 1]
            options = fields[fields.index("-") + 3].split(",")
            if kind == "cgroup2" and "cgroup2" in mine:
                parents.append(mount_point + mine.pop("cgroup2").rstrip("/"))
            elif kind == "cgroup" and "name=systemd" in options and "name=systemd" in mine:
                parents.append(mount_point + mine.pop("name=systemd").rstrip("/"))
    assert parents and parents[0].startswith("/sys/fs/cgroup"), \
        f"no cgroup2 hierarchy mounted for this process: {parents}"
    return parents


def _remove_cgroup(path: str) -> None:
    for directory, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
        os.rmdir(directory)


class BootedRoot:
    """`with BootedRoot(root) as booted: booted.run([...])`; `root` is a DebianRoot
    with systemd installed."""

    def __init__(self, root: DebianRoot) -> None:
        self.root = root
        self.name = f"pypam-pid1-{os.getpid()}"
        self.log = ""
        self.cgroups = [os.path.join(parent, self.name) for parent in _cgroup_parents()]
        self.nspawn: subprocess.Popen | None = None
        self.leader = 0

    def __enter__(self) -> Self:
        fd, self.log = tempfile.mkstemp(prefix=f"{self.name}-console-", dir="/var/tmp")
        try:
            for cgroup in self.cgroups:
                os.mkdir(cgroup)
            enter = "".join(f'echo $$ > "{c}/cgroup.procs" && ' for c in self.cgroups)
            argv = ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root.path}",
                    f"--machine={self.name}", "--register=no", "--keep-unit",
                    "--console=read-only", "--capability=CAP_BPF",
                    "--system-call-filter=bpf"]
            env = {"PATH": PATH, "LANG": "C.UTF-8", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
            self.nspawn = subprocess.Popen(["sh", "-c", enter + 'exec "$@"', "sh", *argv],
                                           stdin=subprocess.DEVNULL, stdout=fd,
                                           stderr=subprocess.STDOUT, env=env)
            self._wait_for_boot()
        except BaseException:
            self.__exit__()
            raise
        finally:
            os.close(fd)
        return self

    def _wait_for_boot(self) -> None:
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            assert self.nspawn.poll() is None, f"systemd-nspawn exited:\n{self.console()}"
            self.leader = self.leader or self._find_leader()
            if self.leader:
                state = self.run(["systemctl", "is-system-running", "--wait"], check=False)
                if state.stdout.strip() in ("running", "degraded"):
                    failed = self.run(["systemctl", "--failed", "--no-legend"]).stdout
                    assert state.stdout.strip() == "running", f"failed units:\n{failed}"
                    return
            time.sleep(0.2)
        raise AssertionError(f"not booted in {BOOT_SECONDS} s:\n{self.console()}")

    def _find_leader(self) -> int:
        """The container's PID 1: the child of nspawn that is pid 1 in its namespace."""
        try:
            with open(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children") as f:
                children = f.read().split()
        except FileNotFoundError:
            return 0
        for child in children:
            try:
                with open(f"/proc/{child}/status") as f:
                    nspid = next(line for line in f if line.startswith("NSpid:")).split()
            except (FileNotFoundError, StopIteration):
                continue
            if len(nspid) > 2 and nspid[-1] == "1":
                return int(child)
        return 0

    def console(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()[-4000:]

    def command(self, argv: list[str], *, cgroup_namespace: bool = True) -> list[str]:
        """argv run inside; without the container's cgroup namespace, a process can
        write a pid into one of its cgroups (the kernel refuses a move between
        cgroups the writer's namespace does not both see)."""
        namespaces = ["-a"] if cgroup_namespace else ["-m", "-u", "-i", "-n", "-p", "-r", "-w"]
        return ["nsenter", "-t", str(self.leader), *namespaces,
                "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", *argv]

    def run(self, argv: list[str], *, input: bytes | None = None, check: bool = True,
            cgroup_namespace: bool = True) -> subprocess.CompletedProcess:
        return run_captured(self.command(argv, cgroup_namespace=cgroup_namespace),
                            shown=argv, where=self.name, check=check, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)

    def __exit__(self, *exc: object) -> None:
        try:
            self._poweroff_and_check()
        finally:
            os.unlink(self.log)

    def _poweroff_and_check(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # nspawn: a clean poweroff
            try:
                self.nspawn.wait(POWEROFF_SECONDS)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
                raise AssertionError(f"no poweroff in {POWEROFF_SECONDS} s:\n"
                                     f"{self.console()}") from None
        left = [c for c in self.cgroups if os.path.isdir(c) and self._processes(c)]
        for cgroup in self.cgroups:
            if os.path.isdir(cgroup) and cgroup not in left:
                _remove_cgroup(cgroup)
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if self.root.path in line.split()[4]]
        propagate = f"/run/systemd/nspawn/propagate/{self.name}"
        assert not left, f"processes left in {left}"
        assert not mounts, f"mounts left: {mounts}"
        assert not os.path.exists(propagate), propagate

    @staticmethod
    def _processes(cgroup: str) -> list[str]:
        found = []
        for directory, _, files in os.walk(cgroup):
            if "cgroup.procs" in files:
                with open(os.path.join(directory, "cgroup.procs")) as f:
                    found += f.read().split()
        return found
