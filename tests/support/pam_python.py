"""Debian's pam_python.so (libpam-python, installed by `make deps`): the comparison
module of several tests. Asked from dpkg, because its directory differs by release
(/lib/security on Debian 12, /usr/lib/<multiarch>/security on Debian 13)."""
from __future__ import annotations

import subprocess


def pam_python_so() -> str:
    listing = subprocess.run(["dpkg-query", "-L", "libpam-python"], capture_output=True,
                             text=True, check=True).stdout.split()
    found = [p for p in listing if p.endswith("/pam_python.so")]
    assert len(found) == 1, f"libpam-python ships {found!r}, expected one pam_python.so"
    return found[0]


PAM_PYTHON_SO = pam_python_so()
