"""A throw-away Debian system in private namespaces, for driving real applications.

`Sandbox` runs a holder process (PID 1 of a new PID namespace) in new mount, PID,
network, UTS and IPC namespaces, in which:

- /usr, /etc and /var are overlays: Debian's packages of `PACKAGES` (sudo,
  openssh-server, vlock, iproute2), installed once by apt-get and dpkg into a cached layer
  (`package_layer`, a tar file unpacked into each sandbox's tmpfs), over the machine's
  own trees, with a writable upper layer on that tmpfs; /home and /root are overlays of the machine's, writable the same way. useradd,
  chpasswd and edits of /etc/pam.d happen there and vanish with the namespace; pypam's
  own state on the machine (`HIDDEN_STATE`: its policy, salt key and records) is hidden;
- /run is an empty tmpfs (no host daemon's sockets, no host systemd to talk to);
- /dev is a private tree: the usual character devices, the host's /dev/pts with
  /dev/ptmx -> pts/ptmx (so the ptys pexpect allocates outside are valid terminals
  inside, and ptys made inside come from the same instance), a
  private /dev/shm, and /dev/log pointing at the test's `SyslogCapture` socket;
- the network has only loopback, holding 127.0.0.1 and `REMOTE_ADDR` (192.0.2.1, a
  documentation address): a client bound to it looks like another machine, one on
  127.0.0.1 like a local user (tpm_pin offers neither a PIN: PAM_RHOST is set).

Commands enter it with nsenter (`argv()`, `run()`, `popen()`, `spawn()` for pexpect on a
real pty), optionally as another user (`setpriv`, no no_new_privs: set-uid binaries such
as sudo keep their power). Files inside are reached from the test process through
/proc/PID/root (`path()`). Killing the holder kills every process in the namespace; the
mounts, the tmpfs and whatever was written there go with it. Nothing on the machine
changes: /etc/pam.d, /etc/passwd and the package database are the host's untouched
lowers. The only files written outside the test's temporary directory are the layer
cache (/var/cache/pypam-realapps, root 0700: the .debs and the layer's tar file).

The layer is built in a namespace of its own (mount and PID, /run hidden so that no
maintainer script reaches a running service manager, policy-rc.d denying every
service start) and keyed by the package names and the host's dpkg status and account
files: it is rebuilt when the host changes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from devtools.swtpm import die_with_parent
from tests.support.syslog_capture import SyslogCapture

#: Debian packages installed inside the sandbox only (never on the machine).
PACKAGES = ("sudo", "openssh-server", "vlock", "iproute2")  # ip: the sandbox's loopback
CACHE_DIR = "/var/cache/pypam-realapps"
ARCHIVES = os.path.join(CACHE_DIR, "archives")
#: Trees dpkg writes into (merged /usr: /bin, /sbin and /lib are symlinks into /usr).
LAYERED = ("usr", "etc", "var")
#: Trees the tests write into, over the machine's own, without a package layer.
WRITABLE = ("home", "root")
#: The host's files whose content the layer copies (dpkg status, adduser's edits).
LAYER_INPUTS = ("/var/lib/dpkg/status", "/etc/passwd", "/etc/group", "/etc/shadow",
                "/etc/gshadow")
#: An address on the sandbox's loopback that PAM does not take for a local host.
REMOTE_ADDR = "192.0.2.1"
HOSTNAME = "pypam-sandbox"
#: Character devices bound into the private /dev.
# pypam's own state on a machine (policy, salt key and enrolment records, the service's
# directory): never seen inside, whatever the machine holds.
HIDDEN_STATE = ("/etc/pinpam", "/var/lib/pinutild", "/var/lib/pinpam")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
#: /dev/ptmx as in containers: a bound ptmx node would look for "pts" beside itself in
#: devtmpfs, not in our tree; pts/ptmx is the host instance's own multiplexer (the
#: instance pexpect's ptys come from). Its mode is the host's ptmxmode (0000 here: only
#: root opens new ptys inside, which sudo, login and sshd do).
SYMLINKS = {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
            "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"}
#: Environment of commands started inside (nsenter passes it on).
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM": "dumb", "LANG": "C.UTF-8", "HOME": "/root"}

# Everything overlay-specific lives on tmpfs mounted inside the namespace (upper layers,
# whiteouts, trusted.overlay.* xattrs): it works even where / is itself an overlay (the
# fresh Debian roots of `make test-distros`). The result leaves as a tar file.
_TAR_OPTIONS = "--xattrs --xattrs-include=trusted.overlay.* --numeric-owner"
_BUILD_SCRIPT = r"""
set -e
build=$1 archives=$2 out=$3; shift 3
mount -t tmpfs -o mode=0755 layer "$build"
for d in usr etc var; do
    mkdir -p "$build/$d" "$build/work/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$build/$d,workdir=$build/work/$d" "/$d"
done
mount -t tmpfs -o mode=0755 run /run
mount --bind "$archives" /var/cache/apt/archives
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
install() {
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
}
install "$@" || { apt-get update -q && install "$@"; }
rm -f /usr/sbin/policy-rc.d
tar -C "$build" TAR_OPTIONS -cf "$out" usr etc var
""".replace("TAR_OPTIONS", _TAR_OPTIONS)

# Run by `unshare` as PID 1's parent shell; ends by becoming the reaper (PID 1).
_ENTER_SCRIPT = r"""
set -e
dir=$1 layer_tar=$2
mount -t tmpfs -o mode=0755 sandbox "$dir/rw"
layer=$dir/rw/layer
mkdir "$layer"
tar -C "$layer" TAR_OPTIONS -xpf "$layer_tar"
for d in usr etc var home root; do
    mkdir -p "$dir/rw/up/$d" "$dir/rw/work/$d"
    lower=/$d
    [ -d "$layer/$d" ] && lower="$layer/$d:/$d"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/rw/up/$d,workdir=$dir/rw/work/$d" "/$d"
done
# A machine with pypam installed (or a job beside the tests that made its state) must
# not hand its policy, salt key or enrolment records to the sandbox: hidden here, in the
# upper layer (whiteouts); the machine's own files stay as they are.
rm -rf PYPAM_STATE
mount -t tmpfs -o mode=0755 run /run
mkdir -m 1777 /run/lock
for n in null zero full random urandom tty; do mount --bind "/dev/$n" "$dir/dev/$n"; done
mount --bind /dev/pts "$dir/dev/pts"
mount -t tmpfs -o mode=1777 shm "$dir/dev/shm"
mount --rbind "$dir/dev" /dev
hostname "$3"
ip link set lo up
ip addr add "$4/32" dev lo
exec python3 -c "$5"
""".replace("TAR_OPTIONS", _TAR_OPTIONS).replace("PYPAM_STATE", " ".join(HIDDEN_STATE))

# PID 1 of the sandbox: says it is ready, then reaps every orphan until killed.
_REAPER = r"""
import os, sys, time
sys.stdout.write("ready\n"); sys.stdout.flush(); os.close(1)
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
"""


def _digest(packages: Sequence[str]) -> str:
    """`PACKAGEKEY-HOSTKEY`: a layer per package set, rebuilt when the host changes."""
    h = hashlib.sha256()
    for path in LAYER_INPUTS:
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except FileNotFoundError:
            h.update(b"absent")
    return f"{hashlib.sha256(' '.join(packages).encode()).hexdigest()[:8]}-{h.hexdigest()[:16]}"


def package_layer(packages: Sequence[str] = PACKAGES) -> str:
    """The cached layer (a tar file) with `packages` installed; built under a lock if
    missing or made for another state of the host."""
    os.makedirs(ARCHIVES, exist_ok=True)
    os.chmod(CACHE_DIR, 0o700)  # the layer holds copies of the host's /etc/shadow
    key = _digest(packages)
    layer = os.path.join(CACHE_DIR, f"layer-{key}.tar")
    with open(os.path.join(CACHE_DIR, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(layer):
            return layer
        # Outside /usr, /etc and /var, which the build covers with overlays.
        build = tempfile.mkdtemp(prefix="pypam-layer-build-", dir="/tmp")
        try:
            os.mkdir(os.path.join(build, "tmpfs"))
            out = os.path.join(build, "layer.tar")
            done = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                 "--kill-child", "--mount-proc", "--", "sh", "-c", _BUILD_SCRIPT, "sh",
                 os.path.join(build, "tmpfs"), ARCHIVES, out, *packages],
                capture_output=True, text=True, timeout=900, check=False,
                env={"PATH": BASE_ENV["PATH"], "LANG": "C.UTF-8"})
            if done.returncode != 0:
                raise RuntimeError(f"installing {' '.join(packages)} in the layer failed:\n"
                                   f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            for old in os.listdir(CACHE_DIR):  # this package set's earlier host states
                if old.startswith(f"layer-{key.split('-')[0]}-"):
                    path = os.path.join(CACHE_DIR, old)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.unlink(path)
            shutil.move(out, layer + ".tmp")
            os.chmod(layer + ".tmp", 0o600)
            os.replace(layer + ".tmp", layer)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return layer


class Sandbox:
    """One private Debian system; see the module docstring."""

    def __init__(self, layer: str, syslog: SyslogCapture) -> None:
        self.syslog = syslog
        self.dir = tempfile.mkdtemp(prefix="pypam-sandbox-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        os.mkdir(os.path.join(self.dir, "rw"))
        self._make_dev()
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
             "--kill-child", "--mount-proc", "--net", "--uts", "--ipc", "--",
             "sh", "-c", _ENTER_SCRIPT, "sh", self.dir, layer, HOSTNAME, REMOTE_ADDR, _REAPER],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": BASE_ENV["PATH"]}, preexec_fn=die_with_parent)  # noqa: PLW1509
        if self.holder.stdout.readline() != b"ready\n":
            self.holder.kill()
            err = self.holder.communicate(timeout=10)[1].decode(errors="replace")
            shutil.rmtree(self.dir, ignore_errors=True)
            raise RuntimeError(f"the sandbox did not start: {err}")
        self.pid = self._namespace_init()
        # sudo and sshd resolve the host name: answer from /etc/hosts, no DNS.
        self.write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n")

    def _make_dev(self) -> None:
        dev = os.path.join(self.dir, "dev")
        os.mkdir(dev, 0o755)
        os.chmod(dev, 0o755)
        for name in DEVICES:
            open(os.path.join(dev, name), "w").close()  # mount points for --bind
        for name in ("pts", "shm"):
            os.mkdir(os.path.join(dev, name))
        for name, target in SYMLINKS.items():
            os.symlink(target, os.path.join(dev, name))
        os.symlink(self.syslog.socket_path, os.path.join(dev, "log"))

    def _namespace_init(self) -> int:
        """PID (as seen here) of the holder's child, PID 1 of the sandbox."""
        path = f"/proc/{self.holder.pid}/task/{self.holder.pid}/children"
        with open(path) as f:
            children = f.read().split()
        if len(children) != 1:
            raise RuntimeError(f"unshare has children {children}")
        return int(children[0])

    # -- files inside ---------------------------------------------------------------
    def path(self, inside: str) -> str:
        """`inside` (absolute, as the sandbox sees it) seen from the test process."""
        if not inside.startswith("/"):
            raise ValueError(f"not absolute: {inside}")
        return f"/proc/{self.pid}/root{inside}"

    def read(self, inside: str) -> str:
        with open(self.path(inside), encoding="utf-8") as f:
            return f.read()

    def write(self, inside: str, text: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        """Create or replace a file inside (parents created 0755), exact owner and mode."""
        target = self.path(inside)
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        tmp = f"{target}.pypam-tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chown(tmp, *owner)
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    # -- commands inside ------------------------------------------------------------
    def argv(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """`argv` run inside, as root or (setpriv, login environment) as `user`."""
        drop = [] if user is None else [
            "setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--reset-env"]
        return ["nsenter", f"--target={self.pid}", "--mount", "--pid", "--net", "--uts",
                "--ipc", "--root", "--wd=/", "--", *drop, *argv]

    def run(self, argv: Sequence[str], user: str | None = None, input: str | bytes = b"",
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        data = input.encode() if isinstance(input, str) else input
        done = subprocess.run(self.argv(argv, user), input=data, capture_output=True,
                              env=BASE_ENV, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {done.returncode}: "
                                 f"{done.stdout.decode(errors='replace')}"
                                 f"{done.stderr.decode(errors='replace')}")
        return done

    def popen(self, argv: Sequence[str], user: str | None = None, **kwargs: Any) -> subprocess.Popen:
        """A long-running command inside (a daemon); it dies with the sandbox."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.argv(argv, user), env=BASE_ENV, **kwargs)

    def spawn(self, argv: Sequence[str], user: str | None = None, timeout: float = 30):
        """pexpect on a real pty; the command's controlling terminal is that pty."""
        import pexpect

        full = self.argv(argv, user)
        return pexpect.spawn(full[0], full[1:], env=BASE_ENV, timeout=timeout,
                             encoding="utf-8", codec_errors="replace", echo=False)

    # -- accounts -------------------------------------------------------------------
    def add_user(self, name: str, uid: int, password: str, groups: Sequence[str] = ()) -> None:
        """A user with a home directory and a password, inside only (useradd, chpasswd)."""
        extra = ["-G", ",".join(groups)] if groups else []
        self.run(["useradd", "-m", "-u", str(uid), "-U", "-s", "/bin/sh", *extra, name])
        self.set_password(name, password)

    def set_password(self, name: str, password: str) -> None:
        self.run(["chpasswd"], input=f"{name}:{password}\n")

    # -- end ------------------------------------------------------------------------
    def close(self) -> None:
        """Kill every process inside (unshare's --kill-child), then remove the files."""
        if self.holder.poll() is None:
            self.holder.send_signal(signal.SIGKILL)
        self.holder.wait(timeout=10)
        for stream in (self.holder.stdout, self.holder.stderr):
            stream.close()
        # unshare's death SIGKILLs PID 1, and with it every process and mount inside.
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox_layer() -> str:
    """The Debian package layer (built on first use, ~30 s with downloads)."""
    return package_layer()


@pytest.fixture
def sandbox(sandbox_layer, syslog_capture) -> Iterator[Sandbox]:
    box = Sandbox(sandbox_layer, syslog_capture)
    try:
        yield box
    finally:
        box.close()
        assert not os.path.exists(box.dir)
