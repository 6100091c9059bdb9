"""tools/unsafe-tree: which source trees the Makefile builds in a safe copy instead.

The tests run code as `nobody` and the loader trusts only root-owned files nobody else
can write, so a clone under the 0700 /root or a `git archive` tarball extracted as root
(modes 0664/0775) cannot be used in place (issue 11). End to end, `make test-distros`
runs both cases; here each reason is checked on a small tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.pamhost import ROOT

SCRIPT = os.path.join(ROOT, "tools", "unsafe-tree")


@pytest.fixture
def tree():
    """A root-owned 0755 directory holding a tiny clean source tree at `src`."""
    base = tempfile.mkdtemp(prefix="pypam-tree-", dir="/tmp")
    os.chmod(base, 0o755)
    src = os.path.join(base, "src")
    os.makedirs(os.path.join(src, "pypam"))
    os.chmod(src, 0o755)
    os.chmod(os.path.join(src, "pypam"), 0o755)
    with open(os.path.join(src, "pypam", "__init__.py"), "w") as f:
        f.write("")
    os.chmod(os.path.join(src, "pypam", "__init__.py"), 0o644)
    try:
        yield base, src
    finally:
        shutil.rmtree(base)


def reason(path: str) -> str:
    done = subprocess.run(["sh", SCRIPT, path], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_clean_tree_is_used_in_place(tree):
    _, src = tree
    assert reason(src) == ""


def test_a_home_only_root_can_enter_is_refused(tree):
    base, src = tree
    os.chmod(base, 0o700)  # as /root is
    assert reason(src) == f"others cannot enter {base} (mode 700)"


def test_tarball_modes_are_refused(tree):
    _, src = tree
    module = os.path.join(src, "pypam", "__init__.py")
    os.chmod(module, 0o664)  # what `git archive` gives when root extracts it
    assert reason(src).startswith(f"{module} is writable by others")


def test_a_tree_owned_by_another_user_is_refused(tree):
    _, src = tree
    module = os.path.join(src, "pypam", "__init__.py")
    os.chown(module, 65534, 65534)
    assert reason(src).startswith(f"{module} is writable by others, unreadable by others "
                                  "or not root's (nobody 644)")


def test_build_outputs_and_the_venv_are_not_checked(tree):
    # They are made by the build itself, with root's umask, in the copy too.
    _, src = tree
    for name in (".venv", "build", ".git"):
        os.makedirs(os.path.join(src, name))
        os.chmod(os.path.join(src, name), 0o777)
    assert reason(src) == ""


def test_this_checkout_is_usable_in_place_or_is_the_safe_copy():
    # `make test` got here: either this tree is safe, or the Makefile made a copy.
    assert reason(ROOT) == ""
