"""A broken install is visible, never noisy, and never locks anyone out (issue 11 item 4,
issue 9 finding 8).

Each case builds a temporary copy of pam_pypam.so and pinutil and breaks it the way an
upgrade does:
- `stdlib_gone`: its fixed Python home has no standard library (a Python upgrade
  removed the one it was built for). CPython would print its 23-line "Python path
  configuration" dump on fd 2 (the user's terminal) before failing;
- `parts_gone`: its search path has the standard library but neither pypam, pinutil
  nor cffi (the Python parts missing, or installed for another Python).
Then: syslog says so in one line naming the fix, `pinutil` says so on stderr and exits
70, nothing reaches fds 0-2 of the PAM host, and a PIN-or-password stack still lets the
password in.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.support.pamhost import ROOT, prompts, result_name
from tests.support.pin_env import PASSWORD

sys.path.insert(0, os.path.join(ROOT, "shim"))
import build_native

FIX = ("rebuild and reinstall pypam for the installed Python "
       "(make install, or reinstall its package)")
BUILT_FOR = f"{sys.version_info[0]}.{sys.version_info[1]}"
BREAKAGES = ("stdlib_gone", "parts_gone")


@pytest.fixture(params=BREAKAGES)
def broken(request):
    """(kind, directory holding the broken pam_pypam.so and pinutil, expected reason)."""
    work = tempfile.mkdtemp(prefix="pypam-broken-", dir="/tmp")
    os.chmod(work, 0o755)
    try:
        if request.param == "stdlib_gone":
            home = os.path.join(work, "removed", "usr")
            stdlib = build_native.stdlib_paths(home)
            build_native.build(work, [ROOT, *stdlib], os.path.join(ROOT, "modules"), home=home)
            reason = (f"cannot start Python: the standard library of Python {BUILT_FOR} "
                      f"({stdlib[0]}) is missing; {FIX}")
            cli_reason = f"pinutil: {reason}"
        else:
            build_native.build(work, build_native.stdlib_paths(), os.path.join(ROOT, "modules"))
            reason = f"cannot import pypam (ModuleNotFoundError: No module named 'pypam'); {FIX}"
            cli_reason = ("pinutil: cannot import its Python parts (ModuleNotFoundError: "
                          f"No module named 'pinutil'); {FIX}")
        yield request.param, work, reason, cli_reason
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_pin_or_password_stack_falls_through_and_says_why(pin_env, broken, syslog_capture):
    _, work, reason, _ = broken
    shim = os.path.join(work, "pam_pypam.so")
    pin_line = pin_env.tpm_pin_line(control="sufficient").replace(
        os.path.join(ROOT, "build", "pam_pypam.so"), shim)
    assert shim in pin_line
    svc = pin_env.service("login", pin_line, pin_env.matrix_line("required"))
    pin_env.set_password("root", "login")

    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[PASSWORD])

    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert prompts(report) == ["Password: "]  # no PIN prompt: the password, as before
    assert report["stdout"] == report["stderr"] == ""  # nothing on the user's terminal
    pypam_lines = [line for line in syslog_capture.text().splitlines() if "pypam:" in line]
    assert pypam_lines == [f"pam_pypam(login:auth): pypam: {reason}"]


def test_pinutil_says_so_in_one_line(broken):
    _, work, _, cli_reason = broken
    done = subprocess.run([os.path.join(work, "pinutil"), "status", "root"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 70
    assert done.stdout == ""
    assert done.stderr == cli_reason + "\n"
