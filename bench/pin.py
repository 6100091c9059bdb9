"""PIN-login rows for the benchmark: a swtpm, a policy and an enrolled PIN.

`pin_setup` starts a simulator for the bench run and enrols root's PIN in it (root's
index exists only in this private TPM). `pin_daemon_setup` adds a pinutild, which sees
the account `pinutild` as an installed system has it: a test machine has none, and
then each of the service's ~8 lookups of that account per login misses through NSS
(nss-systemd asks systemd-userdbd: ~0.14 ms each here, against ~0.006 ms for a hit),
~1 ms of every login that no installed system pays. It runs in a mount namespace of
its own whose /etc/passwd and /etc/group are copies with that account added (the
machine's files are untouched). BENCH_NO_SERVICE_ACCOUNT=1 runs it without. `tpm_only_ms` times the core's PIN check
without PAM, in one process and without the forked child the PAM module uses: the
"TPM's own time" that repeated PAM logins are compared with.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator

from bench.cases import ROOT, Context, Skip

PIN = "2468"
PINUTIL = os.path.join(ROOT, "build", "pinutil")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

_TPM_ONLY = """
import sys, time
sys.path.insert(0, {root!r})
from pinutil.pin.index import PinIndex
from pinutil.pin.policy import load_policy
from pinutil.pin import salt_key
from pinutil.tpm.context import Tpm
policy = load_policy({policy!r})
name = salt_key.load(policy.salt_key_record)
def check():  # what the direct backend's child does, without the child
    with Tpm(policy.tcti) as tpm:
        PinIndex(tpm, PinIndex.handle_for(0, policy.nv_base), name).check({pin!r}.encode(),
                                                                           salted=True)
for _ in range(5):
    check()
t = time.perf_counter()
for _ in range({n}):
    check()
print((time.perf_counter() - t) * 1000 / {n})
"""


@contextlib.contextmanager
def pin_setup(ctx: Context) -> Iterator[dict[str, str]]:
    if not os.path.exists(PINUTIL):
        raise Skip(f"{PINUTIL} not built (make build)")
    from devtools.swtpm import start_swtpm

    mine = tempfile.mkdtemp(prefix="pin-", dir=ctx.workdir)
    os.chmod(mine, 0o755)
    tpm = start_swtpm(os.path.join(mine, "tpm"))
    try:
        policy = os.path.join(mine, "policy")
        with open(policy, "w") as f:
            f.write(f"tcti = {tpm.tcti}\npinutil_path = {PINUTIL}\n"
                    f"state_dir = {mine}\n"
                    "pin_lockout_max_attempts = 5\nhelper_timeout = 10\n")
        os.chmod(policy, 0o644)
        subprocess.run([PINUTIL, "--policy", policy, "--stdin", "setup", "root"],
                       input=(PIN + "\n").encode(), check=True, capture_output=True)
        yield {"policy": policy, "swtpm_pid": str(tpm.proc.pid)}
    finally:
        tpm.kill()


@contextlib.contextmanager
def pin_daemon_setup(ctx: Context) -> Iterator[dict[str, str]]:
    """pin_setup, plus a pinutild (python -m pinutil.service) on that policy, whose
    socket the policy names (`service_socket`): the daemon backend's row."""
    from devtools.pinutild import Pinutild

    with pin_setup(ctx) as extra:
        policy = extra["policy"]
        service = Pinutild(policy, os.path.join(os.path.dirname(policy), "pinutild.sock"))
        if not os.environ.get("BENCH_NO_SERVICE_ACCOUNT"):
            service.argv = with_service_account(os.path.dirname(policy), service.argv)
        service.start()
        try:
            with open(policy, "a") as f:
                f.write(f"service_socket = {service.socket}\n")
            yield {**extra, "pinutild_pid": str(service.proc.pid),
                   "service_socket": service.socket}
        finally:
            service.stop()


#: The account the service's files may be owned by (pinutil.users.SERVICE_USER), as the
#: package's sysusers file makes it; uid and gid unused on this machine.
_SERVICE_ACCOUNT = ("pinutild:x:64990:64990:pinutild:/nonexistent:/usr/sbin/nologin\n",
                    "pinutild:x:64990:\n")
# Bind the copies over /etc/passwd and /etc/group in a private mount namespace, then
# exec the service: unshare and sh exec in place, so the pid stays the service's.
_IN_NAMESPACE = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"'


def with_service_account(workdir: str, argv: list[str]) -> list[str]:
    """`argv` run where the account `pinutild` exists (see the module docstring)."""
    copies = []
    for name, line in zip(("passwd", "group"), _SERVICE_ACCOUNT):
        copy = os.path.join(workdir, name)
        with open(f"/etc/{name}", encoding="utf-8") as src, open(copy, "w", encoding="utf-8") as f:
            f.write(src.read() + line)
        os.chmod(copy, 0o644)
        copies.append(copy)
    return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", _IN_NAMESPACE,
            "sh", *copies, *argv]


def service_rss_kb(pid: int) -> dict[str, int]:
    """VmRSS of pinutild and of its TPM worker (its one child), in KB."""
    def rss(p: int) -> int:
        with open(f"/proc/{p}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    found = {"server": rss(pid)}
    if children:
        found["worker"] = rss(children[0])
    return found


def tpm_only_ms(policy: str, n: int = 200) -> float:
    """Milliseconds per PIN check through the core alone (salted session, no PAM)."""
    code = _TPM_ONLY.format(root=ROOT, policy=policy, pin=PIN, n=n)
    out = subprocess.run([PYTHON, "-I", "-c", code], check=True, capture_output=True)
    return float(out.stdout)
