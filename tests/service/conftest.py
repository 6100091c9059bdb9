"""Fixtures of the tests of `pinutil` through pinutild (tests/service/test_cli_*.py)."""
from __future__ import annotations

import os

import pytest

from tests.service.enrol_support import PASSWORD, UID, USER


@pytest.fixture
def plain(pin_env, accounts, syslog_capture):
    """A plain copy of the pinutil launcher (0755, no set-id bit) on the test's
    policy, and the test user (tests.service.enrol_support) in the accounts."""
    accounts.add_user(USER, UID, PASSWORD)
    launcher = pin_env.build_launcher(os.path.join(pin_env.dir, "pinutil-plain"), mode=0o755)
    assert not os.stat(launcher).st_mode & 0o6000
    return launcher
