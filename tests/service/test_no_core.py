"""No core dump of pinutild, its TPM worker or the proof process (review 2, G15): their
memory holds the owner password, the master key's authValue, PINs and account
passwords in flight. Started without systemd (`--listen`), each sets RLIMIT_CORE to 0,
hard limit included (on the code before, the hard limit stayed what the starter had:
unlimited here); under systemd the units' LimitCORE=0 does it."""
from __future__ import annotations

import subprocess
import sys

from devtools.pinutild import ROOT, wait_for_listener
from tests.service.test_units import unit


def _core_limits(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                soft, hard = line.split()[4:6]
                return soft, hard
    raise AssertionError(f"no core line in /proc/{pid}/limits")


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_pinutild_and_its_worker_keep_no_core(pinutild):
    pinutild.ask(verb="pin-status", user="root")  # the worker is running by now
    workers = _children(pinutild.proc.pid)
    assert workers, "no TPM worker process"
    for pid in (pinutild.proc.pid, *workers):
        assert _core_limits(pid) == ("0", "0")


def test_the_proof_process_keeps_no_core(tmp_path):
    path = str(tmp_path / "proof.sock")
    proc = subprocess.Popen([sys.executable, "-m", "pinutil.service.proof", "--listen",
                             path, "--peer-user", "root"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_listener(path, proc)  # the limit is set before it binds
        assert _core_limits(proc.pid) == ("0", "0")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_both_units_forbid_core_dumps():
    for name in ("pinutild.service", "pinutil-proof@.service"):
        assert unit(name)["Service"]["LimitCORE"] == "0", name
