"""The simulator against real libpam: random stacks, same final codes, same calls.

Hypothesis draws a seeded `random.Random` per batch; the batch's scenarios
(tests/stack/strategies.py) run through one build/stackhost process (each in its own
mount namespace, with /etc/pam.d and perhaps /usr/lib/pam.d bind-mounted, or with
pam_start_confdir) and through pypam.stack. Any difference fails with both results
and the files. BATCHES x BATCH_SIZE = 2,100 stacks per run.
"""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import compare, materialise, run_real, run_simulated
from .strategies import scenario

BATCH_SIZE = 150
BATCHES = 14


@settings(max_examples=BATCHES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=True))
def test_simulator_agrees_with_libpam(rnd):
    batch = [scenario(rnd) for _ in range(BATCH_SIZE)]
    with tempfile.TemporaryDirectory(prefix="pypam-stack-") as tmp:
        for i, s in enumerate(batch):
            materialise(s, os.path.join(tmp, str(i)))
        real = run_real(batch)
        problems = [p for s, r in zip(batch, real)
                    if (p := compare(s, r, run_simulated(s))) is not None]
    assert not problems, f"{len(problems)} of {len(batch)} disagree; first:\n{problems[0]}"
