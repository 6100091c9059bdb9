"""The simulator against real libpam: random stacks, same final codes, same calls.

Each hypothesis example is a batch of scenarios run through one build/stackhost
process (in a private mount namespace, so /etc/pam.d can be bind-mounted per scenario)
and through pypam.stack; any difference fails with both results and the files.
BATCHES x BATCH_SIZE stacks per run (2,000+), across all stages and modes.
"""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .harness import compare, materialise, run_real, run_simulated
from .strategies import scenarios

BATCH_SIZE = 50
BATCHES = 42


@settings(max_examples=BATCHES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(scenarios(), min_size=BATCH_SIZE, max_size=BATCH_SIZE))
def test_simulator_agrees_with_libpam(batch):
    with tempfile.TemporaryDirectory(prefix="pypam-stack-") as tmp:
        for i, scenario in enumerate(batch):
            materialise(scenario, os.path.join(tmp, str(i)))
        real = run_real(batch)
        problems = [p for s, r in zip(batch, real)
                    if (p := compare(s, r, run_simulated(s))) is not None]
    assert not problems, f"{len(problems)} of {len(batch)} disagree; first:\n{problems[0]}"
