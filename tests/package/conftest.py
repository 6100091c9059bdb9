"""tests/package: the packages are built once for all its modules (debs.py)."""
import pytest

from tests.package.debs import built_debs

debs = pytest.fixture(built_debs, scope="session", name="debs")
