"""pypam-keyring-rekey runs the installed pinutil, never one from the caller's PATH
(review 2 G10: sudo passes the caller's PATH on where sudoers has no secure_path, and
the command runs as root).

The command is copied into a temporary PREFIX/sbin with a stand-in PREFIX/bin/pinutil
(what Makefile and debian/rules install side by side); a `pinutil` planted first in
PATH must not run. Each stand-in only leaves a mark and gives no token, so the command
refuses (exit 1) either way and nothing on the machine is touched. Fails on the old
command: the planted one ran."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REKEY = os.path.join(ROOT, "tools", "pypam-keyring-rekey")


def _stand_in(path: str, mark: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\ntouch '{mark}'\nexit 1\n")
    os.chmod(path, 0o755)


@pytest.fixture
def prefix():
    directory = tempfile.mkdtemp(prefix="pypam-rekey-", dir="/tmp")
    yield directory
    shutil.rmtree(directory)


def test_a_pinutil_planted_in_path_never_runs(prefix):
    os.makedirs(os.path.join(prefix, "sbin"))
    rekey = os.path.join(prefix, "sbin", "pypam-keyring-rekey")
    shutil.copy(REKEY, rekey)
    installed, planted = (os.path.join(prefix, name) for name in ("installed.ran",
                                                                  "planted.ran"))
    _stand_in(os.path.join(prefix, "bin", "pinutil"), installed)
    _stand_in(os.path.join(prefix, "evil", "pinutil"), planted)
    done = subprocess.run(
        [sys.executable, "-I", rekey, "--user", "root", "--stdin"], input="x\n",
        env={"PATH": f"{prefix}/evil:/usr/bin:/bin"}, capture_output=True, text=True,
        timeout=60, check=False, cwd="/")
    assert done.returncode == 1, done.stderr
    assert not os.path.exists(planted), "the pinutil in the caller's PATH ran as root"
    assert os.path.exists(installed), done.stderr
