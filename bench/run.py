"""pypam benchmark: cold logins and long-lived hosts, side by side with references.

    .venv/bin/python bench/run.py [--runs 50] [--repeat 10000] [--cases NAME,...]

(a) cold: one authentication per new process through build/pamhost, median of
    --runs; "in-PAM" is pam_start..pam_end inside the host, "wall" is the whole
    host process as seen from here; peak RSS from the host.
(b) repeated: --repeat transactions (new handle each) in one process: ms per
    transaction and RSS growth.
Prints a table, the ratios and the targets, and writes bench/results.json.
Not a test: timings depend on the machine; run it by hand or with `make bench`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cases import CASES, ROOT, Case, Context, Skip, find_pam_python
from bench.measure import (
    ColdResult,
    Prepared,
    RepeatResult,
    measure_cold,
    measure_repeated,
    prepare,
)
from bench.pin import service_rss_kb, tpm_only_ms
from devtools.pamhost import build_host

RESULTS = os.path.join(ROOT, "bench", "results.json")
OURS, PYTHON_REF, FLOOR = "pam_pypam", "pam_python", "pam_permit"
TARGET_COLD_RATIO = 0.8        # cold pam_pypam <= 0.8 x pam_python
TARGET_REPEAT_MS = 0.05        # per transaction in a long-lived host
TARGET_GROWTH_KB = 1024        # RSS growth over 1,000 -> 10,000 transactions
PIN_DIRECT, PIN_HELPER, PIN_DAEMON = "tpm_pin direct", "tpm_pin helper", "tpm_pin daemon"
PIN_FLOOR = "pin-login floor"  # bench/modules/bench_floor_login.py: the bound under PIN_DAEMON
TARGET_PIN_COLD_RATIO = 1.0    # cold direct PIN login <= 1.0 x pam_python doing nothing
TARGET_PIN_OVER_TPM_MS = 1.0   # repeated PIN login within 1 ms of the TPM's own time
TARGET_DAEMON_COLD = 1.2       # cold PIN login through pinutild <= 1.2 x pam_pypam (trivial)
TARGET_DAEMON_VS_HELPER = 0.1  # ... and <= 0.1 x the helper backend's


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="cold runs per case (default 50)")
    ap.add_argument("--repeat", type=int, default=10_000,
                    help="transactions in the repeated test (default 10000)")
    ap.add_argument("--cases", help="comma-separated case names (default: all)")
    ap.add_argument("--json", default=RESULTS, help=f"results file (default {RESULTS})")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.repeat < 2:
        ap.error("--runs must be >= 1 and --repeat >= 2")
    return args


def select(cases: list[Case], names: str | None) -> list[Case]:
    if not names:
        return cases
    wanted = [n.strip() for n in names.split(",")]
    unknown = set(wanted) - {c.name for c in cases}
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(sorted(unknown))}")
    return [c for c in cases if c.name in wanted]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    host = build_host()
    workdir = tempfile.mkdtemp(prefix="pypam-bench-", dir="/tmp")
    os.chmod(workdir, 0o755)
    ctx = Context(root=ROOT, workdir=workdir, modules=os.path.join(ROOT, "bench", "modules"),
                  pypam_so=os.path.join(ROOT, "build", "pam_pypam.so"),
                  pam_python_so=find_pam_python())
    skipped: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            prepared = []
            for index, case in enumerate(select(CASES, args.cases)):
                try:
                    extra = stack.enter_context(case.setup(ctx))
                except Skip as why:
                    skipped[case.name] = str(why)
                    continue
                variables = {**dataclasses.asdict(ctx), **extra}
                prepared.append(prepare(case, workdir, index, variables))
            cold = measure_cold(host, [p for p in prepared if p.case.cold], args.runs)
            repeated = {
                p.case.name: measure_repeated(host, p, p.case.repeat or args.repeat)
                for p in prepared if p.case.repeat != 0
            }
            pin = next((p for p in prepared if p.case.name == PIN_DIRECT), None)
            tpm_ms = tpm_only_ms(pin.variables["policy"]) if pin else None
            daemon = next((p for p in prepared if p.case.name == PIN_DAEMON), None)
            rss = service_rss_kb(int(daemon.variables["pinutild_pid"])) if daemon else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print_tables(prepared, cold, repeated, skipped, args)
    if tpm_ms is not None:
        print(f"\nPIN check through the core alone (no PAM, one process): {tpm_ms:.3f} ms")
    if rss is not None:
        print("pinutild RSS after the run: " + ", ".join(f"{k} {v / 1024:.1f} MB"
                                                          for k, v in rss.items()))
    targets = check_targets(cold, repeated, tpm_ms)
    print_targets(targets)
    write_json(args, cold, repeated, skipped, targets, prepared)
    return 0


# -- output ---------------------------------------------------------------------------
def print_tables(prepared: list[Prepared], cold: dict[str, ColdResult],
                 repeated: dict[str, RepeatResult], skipped: dict[str, str],
                 args: argparse.Namespace) -> None:
    print(f"\n(a) cold: one transaction per new process, median of {args.runs} (p90 in brackets)")
    print(f"{'case':<16}{'stage':<7}{'in-PAM ms':>18}{'wall ms':>18}{'peak RSS MB':>13}")
    for p in prepared:
        c = cold.get(p.case.name)
        if c:
            print(f"{p.case.name:<16}{','.join(p.case.stages):<7}"
                  f"{c.pam_ms_median:>9.2f} [{c.pam_ms_p90:>6.2f}]"
                  f"{c.wall_ms_median:>9.2f} [{c.wall_ms_p90:>6.2f}]"
                  f"{c.maxrss_kb_median / 1024:>13.1f}")
    print("\n(b) repeated: transactions in one process, new handle each")
    print(f"{'case':<16}{'txns':>7}{'ms/txn':>10}{'RSS first MB':>14}{'RSS last MB':>13}"
          f"{'growth 1k->10k MB':>19}")
    for name, r in repeated.items():
        mark = " (extrapolated)" if r.extrapolated else ""
        print(f"{name:<16}{r.transactions:>7}{r.per_txn_ms:>10.4f}"
              f"{r.rss_kb_first_sample / 1024:>14.1f}{r.rss_kb_last_sample / 1024:>13.1f}"
              f"{r.growth_kb_per_9000 / 1024:>19.2f}{mark}")
    print("\nnotes:")
    for p in prepared:
        if p.case.note:
            print(f"  {p.case.name}: {p.case.note}")
    for name, r in repeated.items():
        if r.extrapolated:
            print(f"  {name}: repeated run is {r.transactions} transactions, RSS sampled every"
                  f" {r.sample_every}; growth scaled to 9,000 transactions")
    for name, why in skipped.items():
        print(f"  {name}: SKIPPED: {why}")
    ratios = cold_ratios(cold)
    if ratios:
        print("\nratios (cold medians, in-PAM / wall):")
        for label, (pam, wall) in ratios.items():
            print(f"  {label:<34}{pam:>7.2f} / {wall:.2f}")


def cold_ratios(cold: dict[str, ColdResult]) -> dict[str, tuple[float, float]]:
    out = {}
    pairs = [(ours, ref) for ours in (OURS, PIN_DIRECT, PIN_HELPER, PIN_DAEMON)
             for ref in (PYTHON_REF, FLOOR)]
    pairs += [(PIN_DAEMON, OURS), (PIN_DAEMON, PIN_HELPER), (PIN_DAEMON, PIN_DIRECT),
              (PIN_FLOOR, OURS), (PIN_DAEMON, PIN_FLOOR)]
    for ours, ref in pairs:
        if ours in cold and ref in cold:
            a, b = cold[ours], cold[ref]
            out[f"{ours} / {ref}"] = (a.pam_ms_median / b.pam_ms_median,
                                      a.wall_ms_median / b.wall_ms_median)
    return out


def check_targets(cold: dict[str, ColdResult], repeated: dict[str, RepeatResult],
                  tpm_ms: float | None = None) -> list[dict]:
    """Each target: what, limit, measured value or None, and pass/fail/n.a."""
    def verdict(value: float | None, limit: float) -> str:
        return "n/a" if value is None else ("PASS" if value <= limit else "FAIL")

    ratio = (cold[OURS].pam_ms_median / cold[PYTHON_REF].pam_ms_median
             if OURS in cold and PYTHON_REF in cold else None)
    pin_ratio = (cold[PIN_DIRECT].pam_ms_median / cold[PYTHON_REF].pam_ms_median
                 if PIN_DIRECT in cold and PYTHON_REF in cold else None)
    pin_rep = repeated.get(PIN_DIRECT)
    pin_over = pin_rep.per_txn_ms - tpm_ms if pin_rep and tpm_ms is not None else None
    def cold_ratio(a: str, b: str) -> float | None:
        return cold[a].pam_ms_median / cold[b].pam_ms_median if a in cold and b in cold else None

    daemon_cold, daemon_vs_helper = cold_ratio(PIN_DAEMON, OURS), cold_ratio(PIN_DAEMON, PIN_HELPER)
    daemon_rep = repeated.get(PIN_DAEMON)
    daemon_over = daemon_rep.per_txn_ms - tpm_ms if daemon_rep and tpm_ms is not None else None
    ours = repeated.get(OURS)
    per_txn = ours.per_txn_ms if ours else None
    growth = ours.growth_kb_per_9000 if ours else None
    return [
        {"target": f"cold {OURS} <= {TARGET_COLD_RATIO} x {PYTHON_REF} (in-PAM median)",
         "limit": TARGET_COLD_RATIO, "value": ratio, "verdict": verdict(ratio, TARGET_COLD_RATIO)},
        {"target": f"repeated {OURS} <= {TARGET_REPEAT_MS} ms per transaction",
         "limit": TARGET_REPEAT_MS, "value": per_txn, "verdict": verdict(per_txn, TARGET_REPEAT_MS)},
        {"target": f"{OURS} RSS growth < 1 MB over 1,000 -> 10,000 transactions (KB)",
         "limit": TARGET_GROWTH_KB, "value": growth,
         "verdict": verdict(growth, TARGET_GROWTH_KB - 1e-9)},
        {"target": f"cold {PIN_DIRECT} <= {TARGET_PIN_COLD_RATIO} x {PYTHON_REF} (in-PAM median)",
         "limit": TARGET_PIN_COLD_RATIO, "value": pin_ratio,
         "verdict": verdict(pin_ratio, TARGET_PIN_COLD_RATIO)},
        {"target": f"repeated {PIN_DIRECT} minus the core's own check "
                   f"({'-' if tpm_ms is None else f'{tpm_ms:.3f}'} ms) <= {TARGET_PIN_OVER_TPM_MS} ms",
         "limit": TARGET_PIN_OVER_TPM_MS, "value": pin_over,
         "verdict": verdict(pin_over, TARGET_PIN_OVER_TPM_MS)},
        {"target": f"cold {PIN_DAEMON} <= {TARGET_DAEMON_COLD} x {OURS} (in-PAM median)",
         "limit": TARGET_DAEMON_COLD, "value": daemon_cold,
         "verdict": verdict(daemon_cold, TARGET_DAEMON_COLD)},
        {"target": f"cold {PIN_DAEMON} <= {TARGET_DAEMON_VS_HELPER} x {PIN_HELPER} (in-PAM median)",
         "limit": TARGET_DAEMON_VS_HELPER, "value": daemon_vs_helper,
         "verdict": verdict(daemon_vs_helper, TARGET_DAEMON_VS_HELPER)},
        {"target": f"repeated {PIN_DAEMON} minus the core's own check <= "
                   f"{TARGET_PIN_OVER_TPM_MS} ms",
         "limit": TARGET_PIN_OVER_TPM_MS, "value": daemon_over,
         "verdict": verdict(daemon_over, TARGET_PIN_OVER_TPM_MS)},
    ]


def print_targets(targets: list[dict]) -> None:
    print("\ntargets:")
    for t in targets:
        value = "-" if t["value"] is None else f"{t['value']:.4g}"
        print(f"  [{t['verdict']:>4}] {t['target']}: {value}")


def write_json(args: argparse.Namespace, cold: dict[str, ColdResult],
               repeated: dict[str, RepeatResult], skipped: dict[str, str],
               targets: list[dict], prepared: list[Prepared]) -> None:
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"kernel": platform.release(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "runs": args.runs,
        "cases": {p.case.name: {"pam_lines": p.case.pam_lines, "stages": list(p.case.stages),
                                "note": p.case.note} for p in prepared},
        "cold": {k: dataclasses.asdict(v) for k, v in cold.items()},
        "repeated": {k: dataclasses.asdict(v) for k, v in repeated.items()},
        "ratios": {k: {"in_pam": a, "wall": b} for k, (a, b) in cold_ratios(cold).items()},
        "targets": targets,
        "skipped": skipped,
    }
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
