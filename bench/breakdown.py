"""Where a cold PIN login through pinutild spends its time.

    .venv/bin/python bench/breakdown.py [--runs 30]

(a) cold logins through build/pamhost (bench/measure.py, round-robin, medians):
    pam_permit (the host and libpam), pam_pypam with the trivial module (the
    interpreter and pypam) and tpm_pin backend=daemon (the whole PIN login).
(b) the PIN login's own steps in a fresh interpreter started as the shim starts it
    (isolated, no site; pypam's loader for the module): tpm_pin and its imports, the
    policy and the backend, the login (one pin-login connection: the service's status,
    the prompt answered at once, the check; the client's import included); medians.
(c) inside pinutild, warm, in this process: each verb as the TPM worker runs it, the
    TPM commands it sends and their time on the swtpm, and the round trip a warm
    client sees (the rest is the socket, the server and the worker's pipe).
Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cases import CASES, Context
from bench.measure import host_argv, measure_cold, prepare
from bench.pin import PIN
from devtools.pamhost import CLEAN_ENV, build_host

COLD_CASES = ("pam_permit", "pam_pypam", "tpm_pin helper", "tpm_pin daemon", "pin-login floor")
PYPAM_SO = os.path.join(ROOT, "build", "pam_pypam.so")

# tpm_pin's authenticate, step by step, with the same calls (modules/tpm_pin.py).
_STEPS = r"""
import sys, time
t = [time.perf_counter()]
sys.path[:0] = [ROOT_DIR, PURELIB]
import pypam.dispatch
from pypam.loader import load_module
t.append(time.perf_counter())
module = load_module("tpm_pin", ROOT_DIR + "/modules")
t.append(time.perf_counter())
from pinutil.deadline import login_budget
from pinutil.pin.login import choose_backend
from pinutil.pin.policy import load_policy
from pinutil.service.requester import stdin_requester
policy = load_policy(POLICY)
budget = login_budget({}, policy.helper_timeout)
backend = choose_backend("daemon", policy, budget, POLICY, stdin_requester())
t.append(time.perf_counter())
backend.login("root", lambda prompt: bytearray(policy.check_pin(PIN)))
t.append(time.perf_counter())
print(" ".join(f"{(b - a) * 1000:.4f}" for a, b in zip(t, t[1:])))
"""
STEP_NAMES = ("interpreter's pypam (dispatcher, loader)", "tpm_pin and its imports",
              "policy, budget, requester, backend", "pin-login (client import incl.)")


def cold(runs: int, workdir: str) -> tuple[dict, dict]:
    ctx = Context(root=ROOT, workdir=workdir, modules=os.path.join(ROOT, "bench", "modules"),
                  pypam_so=PYPAM_SO, pam_python_so="")
    with contextlib.ExitStack() as stack:
        prepared = []
        for index, case in enumerate(c for c in CASES if c.name in COLD_CASES):
            extra = stack.enter_context(case.setup(ctx))
            prepared.append(prepare(case, workdir, index,
                                    {**dataclasses.asdict(ctx), **extra}))
        results = measure_cold(build_host(), prepared, runs)
        cpu = cpu_per_login(build_host(), prepared, runs)
        daemon = next(p for p in prepared if p.case.name == "tpm_pin daemon")
        steps = fresh_interpreter_steps(daemon.variables["policy"], runs)
        inside = service_inside(daemon.variables["policy"], runs)
    return results, {"steps": steps, "inside": inside, "cpu": cpu}


def _cpu_ms(pid: int) -> float:
    """CPU time so far of `pid` and of its children now alive (pinutild's worker), from
    /proc/PID/schedstat (nanoseconds)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        children = []
    total = 0
    for each in (pid, *children):
        try:
            with open(f"/proc/{each}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e6


def cpu_per_login(host: str, prepared: list, runs: int) -> dict[str, dict[str, float]]:
    """CPU time per cold login, round-robin: the host process and whatever it waited
    for (the helper backend's pinutil), plus the case's own swtpm and pinutild (each
    case has its own, so their totals over the runs are that case's). Unlike wall time
    it does not grow with what else runs on the machine."""
    out = {p.case.name: {"host": 0.0, "service": 0.0, "swtpm": 0.0} for p in prepared}
    others = {p.case.name: {k: int(p.variables[v]) for k, v in
                            (("service", "pinutild_pid"), ("swtpm", "swtpm_pid"))
                            if v in p.variables} for p in prepared}
    start = {name: {k: _cpu_ms(pid) for k, pid in pids.items()}
             for name, pids in others.items()}
    for _ in range(runs):
        for p in prepared:
            answers = b"".join(a.encode() + b"\0" for a in p.case.answers)
            proc = subprocess.Popen(host_argv(host, p), stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**CLEAN_ENV, **p.env})
            proc.stdin.write(answers)
            proc.stdin.close()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(f"{p.case.name}: host exit {proc.returncode}")
            out[p.case.name]["host"] += (usage.ru_utime + usage.ru_stime) * 1000
    for name, pids in others.items():
        for k, pid in pids.items():
            out[name][k] = _cpu_ms(pid) - start[name][k]
    return {name: {k: v / runs for k, v in row.items()} for name, row in out.items()}


def fresh_interpreter_steps(policy: str, runs: int) -> list[float]:
    import sysconfig

    code = (_STEPS.replace("ROOT_DIR", repr(ROOT)).replace("POLICY", repr(policy))
            .replace("PURELIB", repr(sysconfig.get_path("purelib"))).replace("PIN", repr(PIN)))
    rows = []
    for _ in range(runs):
        done = subprocess.run(["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True,
                              text=True, check=True, env={}, cwd="/")
        rows.append([float(x) for x in done.stdout.split()])
    return [statistics.median(col) for col in zip(*rows)]


def _median_ms(function, runs: int, before=None) -> float:
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def service_inside(policy: str, runs: int) -> dict:
    """The verbs as the worker runs them (verbs.answer, kept connection), the TPM
    commands each sends, and the round trip through the running service."""
    from pinutil.deadline import TpmBudget
    from pinutil.pin import salt_key
    from pinutil.pin.policy import load_policy
    from pinutil.service import client, spare_session, verbs
    from pinutil.tpm import sapi
    from pinutil.users import User

    root = User("root", 0)
    status = {"user": "root"}
    check = {"user": "root", "pin": PIN.encode()}
    path = load_policy(policy).service_socket
    name = salt_key.load(load_policy(policy).salt_key_record)
    out: dict = {}

    def answer(function, fields) -> None:
        reply = verbs.answer(function, policy, root, fields)
        assert reply["result"] == "success", reply

    def commands(function, fields, before=None) -> int:
        if before is not None:
            before()
        tpm = next(iter(verbs._KEPT.values()))
        sent = tpm.commands_sent
        answer(function, fields)
        return tpm.commands_sent - sent

    answer(verbs.pin_status, status)  # opens the kept connection

    def prepare() -> None:  # what the worker does when idle
        verbs.prepare_spare(policy)

    out["status_ms"] = _median_ms(lambda: answer(verbs.pin_login, status), runs)
    out["status_commands"] = commands(verbs.pin_login, status)
    out["check_spare_ms"] = _median_ms(lambda: answer(verbs.pin_check, check), runs, prepare)
    out["check_spare_commands"] = commands(verbs.pin_check, check, prepare)
    out["check_fresh_ms"] = _median_ms(lambda: answer(verbs.pin_check, check), runs)
    out["check_fresh_commands"] = commands(verbs.pin_check, check)
    tpm = next(iter(verbs._KEPT.values()))
    handle = 0x01000000
    out["tpm_nv_read_public_ms"] = _median_ms(lambda: sapi.read_nv_public(tpm, handle), runs)
    index_name = sapi.read_nv_public(tpm, handle)[1]
    out["tpm_owner_read_ms"] = _median_ms(
        lambda: sapi.read_nv_as_owner(tpm, handle, index_name, 8), runs)

    def start_and_flush() -> None:
        spare_session.prepare(tpm, name)
        spare_session.drop()
    out["spare_prepare_and_flush_ms"] = _median_ms(start_and_flush, runs)
    verbs.leave()

    def log_in() -> None:
        client.pin_login(path, status, lambda prompt: bytearray(PIN.encode()),
                         TpmBudget(10))
    out["round_trip_login_ms"] = _median_ms(log_in, runs)
    waits = []
    for _ in range(runs):  # as a person types: the service has the idle time it gets
        waits.append(_timed_login(path, status))
    out["round_trip_login_waits_ms"] = statistics.median(waits)
    return out


def _timed_login(path: str, fields: dict) -> float:
    """One pin-login whose answer comes 20 ms after the prompt (a fast typist is
    slower): the service's waits alone, ms."""
    from pinutil.deadline import TpmBudget
    from pinutil.service import client

    def typing(prompt: str) -> bytearray:
        time.sleep(0.02)
        return bytearray(PIN.encode())
    start = time.perf_counter()
    client.pin_login(path, fields, typing, TpmBudget(10))
    return (time.perf_counter() - start) * 1000 - 20


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="pypam-bench-breakdown-", dir="/tmp")
    os.chmod(workdir, 0o755)
    try:
        results, parts = cold(args.runs, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    permit, trivial, helper, daemon, floor = (results[n] for n in COLD_CASES)
    print(f"(a) cold, median of {args.runs} (in-PAM ms; wall ms)")
    for name in COLD_CASES:
        r = results[name]
        print(f"  {name:<16}{r.pam_ms_median:8.2f}{r.wall_ms_median:9.2f}")
    print(f"  host process start and exit (pam_permit wall - in-PAM): "
          f"{permit.wall_ms_median - permit.pam_ms_median:.2f}")
    print(f"  tpm_pin daemon over the trivial module: "
          f"{daemon.pam_ms_median - trivial.pam_ms_median:.2f} "
          f"(ratio {daemon.pam_ms_median / trivial.pam_ms_median:.2f})")
    print(f"  tpm_pin daemon / tpm_pin helper: {daemon.pam_ms_median / helper.pam_ms_median:.3f}")
    print(f"  the floor (pin-login, nothing else) over the trivial module: "
          f"{floor.pam_ms_median - trivial.pam_ms_median:.2f} "
          f"(ratio {floor.pam_ms_median / trivial.pam_ms_median:.2f})")
    cpu = parts["cpu"]
    print("    CPU ms per cold login (host process incl. what it waited for; swtpm; pinutild)")
    for name, row in cpu.items():
        print(f"  {name:<16}{row['host']:8.2f}{row['swtpm']:8.2f}{row['service']:8.2f}"
              f"{sum(row.values()):9.2f}")
    total = {name: sum(row.values()) for name, row in cpu.items()}
    print(f"  CPU ratios: daemon / trivial {total['tpm_pin daemon'] / total['pam_pypam']:.2f}, "
          f"daemon / helper {total['tpm_pin daemon'] / total['tpm_pin helper']:.3f}")
    print("(b) the login's steps in a fresh interpreter (median ms)")
    for label, ms in zip(STEP_NAMES, parts["steps"]):
        print(f"  {label:<44}{ms:7.2f}")
    print(f"  {'sum of tpm_pin steps':<44}{sum(parts['steps'][1:]):7.2f}")
    print("(c) inside pinutild, warm (median ms, TPM commands)")
    i = parts["inside"]
    print(f"  pin-login verb, status    {i['status_ms']:6.3f}  {i['status_commands']} commands")
    print(f"  pin-check, spare session   {i['check_spare_ms']:6.3f}  "
          f"{i['check_spare_commands']} commands")
    print(f"  pin-check, fresh session   {i['check_fresh_ms']:6.3f}  "
          f"{i['check_fresh_commands']} commands")
    print(f"  NV_ReadPublic {i['tpm_nv_read_public_ms']:.3f}; NV_Read as owner "
          f"{i['tpm_owner_read_ms']:.3f}; a spare session (ReadPublic, ECDH, "
          f"StartAuthSession; then FlushContext) {i['spare_prepare_and_flush_ms']:.3f}")
    print(f"  pin-login from a warm client: answered at once {i['round_trip_login_ms']:.3f}, "
          f"the service's waits when the answer takes 20 ms "
          f"{i['round_trip_login_waits_ms']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
