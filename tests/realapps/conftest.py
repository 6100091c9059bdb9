"""Fixtures of the real-application tests: a sandbox with pypam wired in, timings."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realapps.harness import PinBox, TimingLog


@pytest.fixture(scope="session")
def timing_log() -> Iterator[TimingLog]:
    log = TimingLog()
    yield log
    log.write()


@pytest.fixture
def pin_box(sandbox, swtpm) -> Iterator[PinBox]:
    box = PinBox(sandbox, swtpm)
    yield box
    box.unwire()        # pypam disable --apply: every pam.d file byte-identical
