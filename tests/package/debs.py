"""The Debian packages under test, built once per session by the real target (`make
deb`, dpkg-buildpackage in a copy of the tree) for every module of tests/package: the
tree as it is, and the same tree with a lower version, the "previous build" an
upgrade starts from. conftest.py makes `built_debs` the session fixture `debs`.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("libpam-pypam", "pypam-tpm-pin")


def version() -> str:
    return subprocess.run(["dpkg-parsechangelog", "-l", f"{ROOT}/debian/changelog",
                           "-S", "Version"], check=True, capture_output=True,
                          text=True).stdout.strip()


def _make_deb(tree: str, out: str) -> dict[str, str]:
    subprocess.run(["make", "-C", tree, "deb", f"DEBDIR={out}"], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)
    return {name: glob.glob(f"{out}/{name}_*.deb")[0] for name in PACKAGES}


def built_debs():
    """{"new": {package: path}, "previous": {...}, "changes": path} in a temp dir."""
    work = tempfile.mkdtemp(prefix="pypam-deb-", dir="/var/tmp")
    try:
        new = _make_deb(ROOT, f"{work}/new")
        # The previous build: this tree with a lower version.
        tree = f"{work}/previous-tree"
        subprocess.run(f"mkdir {tree} && tar -C {ROOT} --exclude=./.venv --exclude=./build "
                       f"--exclude=./.git -cf - . | tar -C {tree} -xf -", shell=True, check=True)
        changelog = f"{tree}/debian/changelog"
        with open(changelog) as f:
            text = f.read()
        with open(changelog, "w") as f:
            f.write(text.replace(f"({version()})", f"({version()}~previous)", 1))
        previous = _make_deb(tree, f"{work}/previous")
        yield {"new": new, "previous": previous,
               "changes": glob.glob(f"{work}/new/*.changes")[0]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dependencies(debs: dict[str, str]) -> list[str]:
    """What the packages `debs` ({package: path}) depend on, for apt in a root."""
    names = set()
    for deb in debs.values():
        depends = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], check=True,
                                 capture_output=True, text=True).stdout
        for item in depends.split(","):
            name = item.split("|")[0].split("(")[0].strip().split(":")[0]
            if name not in PACKAGES:
                names.add(name)
    return sorted(names)
