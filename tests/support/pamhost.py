"""pytest fixtures for the C test host (`pamhost`, `pam_confdir`), over devtools.pamhost,
which the demo and the benchmark use too; its names are re-exported for the tests."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.pamhost import *
from devtools.pamhost import PamService, build_host


@pytest.fixture(scope="session")
def pamhost() -> str:
    """Path of the freshly built test host."""
    return build_host()


@pytest.fixture
def pam_confdir() -> Iterator[PamService]:
    """A temporary service directory under /tmp, removed after the test."""
    service = PamService()
    try:
        yield service
    finally:
        service.remove()
