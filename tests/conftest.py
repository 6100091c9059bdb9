"""Shared pytest set-up: fixtures live in tests/support/ as plugins."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

pytest_plugins = [
    "tests.support.swtpm",
    "tests.support.pamhost",
    "tests.support.pin_env",
    "tests.support.pinutild",
    "tests.support.syslog_capture",
    "tests.support.accounts",
    "tests.support.sandbox",
]
