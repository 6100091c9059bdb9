"""pypam.stack speed: in-process, no PAM transactions.

    .venv/bin/python bench/stack.py [--runs 200]

(a) simulate: one stage of a real service, parsing included (a new load per run):
    `login` auth on this machine (or the Debian 12 test data when /etc/pam.d has none);
    target: under 1 ms (median).
(b) explain: every service of a full desktop /etc/pam.d (Debian 12 with gdm3, sddm,
    lightdm, sudo and sshd: tests/stack/data/debian12) in one process; target: under 1 s.
Not a test: timings depend on the machine (`make bench` runs it after bench/run.py).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pypam.stack import explain, parser, simulate
from pypam.stack.modules import assume_present

DESKTOP = os.path.join(ROOT, "tests", "stack", "data", "debian12")
TARGET_SIMULATE_MS = 1.0
TARGET_EXPLAIN_S = 1.0


def simulate_once(root: str, probe) -> float:
    start = time.perf_counter()
    stack = parser.load_service("login", root=root, probe=probe)
    simulate.simulate_stage(stack, "auth", lambda h, f, p: 0)
    return (time.perf_counter() - start) * 1000


def explain_all(root: str) -> tuple[float, int]:
    names = sorted(os.listdir(os.path.join(root, "etc", "pam.d")))
    start = time.perf_counter()
    for name in names:
        stack = parser.load_service(name, root=root, probe=assume_present)
        for stage in ("auth", "account", "password", "session"):
            if stack.failure is None:
                explain.outcome_table(stack, stage)
    return time.perf_counter() - start, len(names)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args(argv)
    here = os.path.exists("/etc/pam.d/login")
    root, probe = ("/", None) if here else (DESKTOP, assume_present)
    simulate_once(root, probe)                      # warm the module probe cache
    times = [simulate_once(root, probe) for _ in range(args.runs)]
    sim_ms = statistics.median(times)
    explain_s, count = explain_all(DESKTOP)
    print(f"simulate login auth ({'this machine' if here else 'Debian 12 data'}), "
          f"parsing included: median {sim_ms:.3f} ms over {args.runs} runs "
          f"(target < {TARGET_SIMULATE_MS} ms): {'ok' if sim_ms < TARGET_SIMULATE_MS else 'MISSED'}")
    print(f"explain all {count} services of a desktop pam.d: {explain_s:.3f} s "
          f"(target < {TARGET_EXPLAIN_S} s): {'ok' if explain_s < TARGET_EXPLAIN_S else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
