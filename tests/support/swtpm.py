"""A software TPM per test: pytest fixture `swtpm` (and `fresh_swtpm` for fixtures that
need more than one), over devtools.swtpm, which the demo and the benchmark use too.

Each simulator gets a fresh short absolute directory under /tmp (AF_UNIX paths are
limited to 108 bytes, pytest's tmp_path is often too deep), is killed and removed
afterwards, and dies with the test process if that crashes.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from devtools.swtpm import SOCKET_MODE, Swtpm, start_swtpm, tools_env

__all__ = ["SOCKET_MODE", "Swtpm", "fresh_swtpm", "start_swtpm", "swtpm", "tools_env"]


def fresh_swtpm():
    """A fresh swtpm in its own /tmp/pypam-tpm-* dir; killed and removed afterwards.
    A generator, so fixtures needing more than one TPM can `yield from` it."""
    state_dir = tempfile.mkdtemp(prefix="pypam-tpm-", dir="/tmp")
    tpm = Swtpm(state_dir)
    try:
        tpm.start()
        yield tpm
    finally:
        proc = tpm.proc
        tpm.kill()
        assert proc is None or proc.poll() is not None, "swtpm survived teardown"
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not os.path.exists(state_dir)


swtpm = pytest.fixture(fresh_swtpm, name="swtpm")
