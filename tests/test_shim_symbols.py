"""pam_pypam.so exports exactly PAM's six entry points and is never unloaded.

Each check is also run on Debian's pam_python.so, which exports two extra data
symbols and is not linked -z nodelete: the same parsing must see the difference, so
these tests can fail.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.support.pam_python import PAM_PYTHON_SO
from tests.support.pamhost import PAM_PYPAM_SO

SIX = {"pam_sm_authenticate", "pam_sm_setcred", "pam_sm_acct_mgmt",
       "pam_sm_open_session", "pam_sm_close_session", "pam_sm_chauthtok"}


def defined_dynamic_symbols(path: str) -> dict[str, str]:
    """name -> nm type letter, for every defined dynamic symbol of `path`."""
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True,
                         text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3:
            symbols[parts[2]] = parts[1]
    return symbols


def dynamic_flags_1(path: str) -> set[str]:
    """The words after 'Flags:' on readelf's FLAGS_1 line (empty when absent)."""
    out = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True,
                         check=True).stdout
    for line in out.splitlines():
        if "(FLAGS_1)" in line:
            return set(line.split("Flags:", 1)[1].split())
    return set()


@pytest.fixture(scope="module")
def shim() -> str:
    # Built by `make build`; a missing shim is a failure, not a skip.
    with open(PAM_PYPAM_SO, "rb") as f:
        assert f.read(4) == b"\x7fELF"
    return PAM_PYPAM_SO


def test_exactly_the_six_entry_points_are_exported(shim):
    symbols = defined_dynamic_symbols(shim)
    assert set(symbols) == SIX
    assert set(symbols.values()) == {"T"}  # functions in .text, no data


def test_symbol_check_sees_extra_exports_in_pam_python():
    symbols = defined_dynamic_symbols(PAM_PYTHON_SO)
    assert SIX < set(symbols)
    assert set(symbols) - SIX == {"libpam_python_date", "libpam_python_version"}


def test_shim_is_linked_nodelete(shim):
    assert "NODELETE" in dynamic_flags_1(shim)


def test_nodelete_check_sees_its_absence_in_pam_python():
    flags = dynamic_flags_1(PAM_PYTHON_SO)
    assert flags  # the line is there (NOW) ...
    assert "NODELETE" not in flags  # ... without NODELETE

