"""Run the test host for the benchmark and boil its reports down to numbers.

Every run is checked: a transaction that did not end with the case's expected
rc is an error, not a data point (a fast failure is not a fast login).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from bench.cases import Case
from devtools.pamhost import CLEAN_ENV, PAM_NAMES


class BenchError(RuntimeError):
    """A case did not do what it claims to measure."""


@dataclass
class Prepared:
    """A case whose setup ran and whose service file is written."""

    case: Case
    confdir: str
    service: str
    env: dict[str, str]
    variables: dict[str, str]


def host_argv(host: str, p: Prepared, *extra: str) -> list[str]:
    """Command line for one host process of a prepared case (answers on stdin)."""
    return [
        host, "--confdir", p.confdir, "--service", p.service, "--user", p.case.user,
        "--stages", ",".join(p.case.stages), "--expect", str(p.case.expect),
        "--answers-fd", "0", "--answers-nul", "--quiet", *extra,
    ]


def run_host(host: str, p: Prepared, *extra: str, timeout: float = 600) -> tuple[float, dict[str, Any]]:
    """Run one host process; return (wall ms, report). Raises BenchError on failure."""
    answers = b"".join(a.encode() + b"\0" for a in p.case.answers)
    env = {**CLEAN_ENV, **p.env}
    t0 = time.perf_counter()
    done = subprocess.run(host_argv(host, p, *extra), input=answers, capture_output=True,
                          env=env, timeout=timeout, check=False)
    wall_ms = (time.perf_counter() - t0) * 1000.0
    if done.returncode != 0:
        raise BenchError(f"{p.case.name}: host exit {done.returncode}: {done.stderr[-500:]!r}")
    report = json.loads(done.stdout)
    if report["failures"]:
        last = report["stages"][-1]["rc"] if report["stages"] else report["start"]
        raise BenchError(
            f"{p.case.name}: {report['failures']} of {report['transactions']} transactions"
            f" did not return {PAM_NAMES.get(p.case.expect)} (first: {PAM_NAMES.get(last, last)})"
        )
    return wall_ms, report


# -- cold: one transaction per process ---------------------------------------------
@dataclass
class ColdResult:
    """Distribution of one-transaction-per-process runs."""

    runs: int
    pam_ms_median: float   # pam_start .. pam_end, measured inside the host
    pam_ms_p90: float
    wall_ms_median: float  # spawn .. exit of the host process, seen from here
    wall_ms_p90: float
    maxrss_kb_median: float


def measure_cold(host: str, prepared: list[Prepared], runs: int, warmup: int = 3) -> dict[str, ColdResult]:
    """Run every case `runs` times, round-robin, so drift hits all cases alike."""
    samples: dict[str, list[tuple[float, float, int]]] = {p.case.name: [] for p in prepared}
    for i in range(warmup + runs):
        for p in prepared:
            wall, report = run_host(host, p, timeout=60)
            if i >= warmup:  # warm-up fills the page cache and bytecode caches
                samples[p.case.name].append((report["elapsed_ms"], wall, report["maxrss_kb"]))
    return {name: _cold_stats(rows) for name, rows in samples.items()}


def _cold_stats(rows: list[tuple[float, float, int]]) -> ColdResult:
    pam, wall, rss = (sorted(col) for col in zip(*rows))
    return ColdResult(
        runs=len(rows),
        pam_ms_median=statistics.median(pam), pam_ms_p90=_p90(pam),
        wall_ms_median=statistics.median(wall), wall_ms_p90=_p90(wall),
        maxrss_kb_median=statistics.median(rss),
    )


def _p90(sorted_values: list[float]) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(0.9 * len(sorted_values)))]


# -- repeated: many transactions in one process --------------------------------------
@dataclass
class RepeatResult:
    """One long-lived process running `transactions` start..end cycles."""

    transactions: int
    per_txn_ms: float
    rss_kb_first_sample: int   # after `sample_every` transactions
    rss_kb_last_sample: int    # after all of them
    sample_every: int
    growth_kb: int             # last - first sample, as measured
    growth_kb_per_9000: float  # the same slope over 1,000 -> 10,000 transactions
    extrapolated: bool         # fewer than 10,000 were run


def measure_repeated(host: str, p: Prepared, transactions: int) -> RepeatResult:
    """Run `transactions` cycles in one host and read the RSS samples it took."""
    every = 1000 if transactions >= 2000 else max(1, transactions // 10)
    _, report = run_host(host, p, "--repeat", str(transactions), "--sample-every", str(every))
    rss = report["rss_kb_after"]
    first, last = rss[0], rss[-1]
    span = transactions - every
    slope = (last - first) / span if span > 0 else 0.0
    return RepeatResult(
        transactions=transactions, per_txn_ms=report["per_txn_ms"],
        rss_kb_first_sample=first, rss_kb_last_sample=last, sample_every=every,
        growth_kb=last - first, growth_kb_per_9000=slope * 9000,
        extrapolated=transactions < 10_000,
    )


def prepare(case: Case, confdir: str, index: int, variables: dict[str, str]) -> Prepared:
    """Write the case's service file; its name is neutral so cases cannot collide."""
    service = f"bench{index}"
    path = os.path.join(confdir, service)
    with open(path, "w", encoding="utf-8") as f:
        f.write(case.pam_lines.format(**variables))
    return Prepared(case=case, confdir=confdir, service=service, env=dict(case.env),
                    variables=variables)
