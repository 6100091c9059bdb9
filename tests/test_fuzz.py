"""A short, repeatable fuzzing run of every parser target (tests/fuzz/targets.py):
a fixed number of inputs from a fixed seed, starting from the kept corpus. `make fuzz`
runs each target much longer and keeps what it finds."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from tests.fuzz.targets import TARGETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 3000


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_parser_survives_fuzzing(target):
    corpus = os.path.join(ROOT, "tests", "fuzz", "corpus", target)
    assert len(os.listdir(corpus)) >= 2, "seed the corpus with valid examples"
    with tempfile.TemporaryDirectory(prefix="pypam-fuzz-") as scratch:
        new = os.path.join(scratch, "new")
        os.mkdir(new)
        done = subprocess.run(
            [sys.executable, os.path.join(ROOT, "tests", "fuzz", "run.py"), target,
             f"-runs={RUNS}", "-seed=1", "-timeout=20", "-rss_limit_mb=1024",
             f"-artifact_prefix={scratch}/", new, corpus],
            capture_output=True, text=True, timeout=600, check=False, cwd=scratch)
        found = [name for name in os.listdir(scratch) if name != "new"]
    assert done.returncode == 0 and not found, (found, done.stderr[-4000:])
    assert f"Done {RUNS} runs" in done.stderr
