"""setup.py finds its packages rather than listing them: `setup.py build`, which the
Debian package installs from (debian/rules), holds every Python file below pypam/
and pinutil/ and the master key's word list, including those of a subpackage added
after setup.py was written. tests/package/test_debian_package.py checks the built
packages themselves (`make test-deb`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.support.pin_env import ROOT

PACKAGES = ("pypam", "pinutil")
WORD_LIST = "pinutil/master_key/bip39_english.txt"


def python_files(tree: str) -> set[str]:
    found = set()
    for top in PACKAGES:
        for directory, subdirectories, names in os.walk(os.path.join(tree, top)):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            found.update(os.path.relpath(os.path.join(directory, name), tree)
                         for name in names if name.endswith(".py"))
    return found


def built_files(tree: str, out: str) -> set[str]:
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", out],
                          cwd=tree, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return {os.path.relpath(os.path.join(directory, name), out)
            for directory, _, names in os.walk(out) for name in names}


def test_setup_builds_every_python_file_and_the_word_list(tmp_path):
    built = built_files(ROOT, str(tmp_path / "lib"))
    assert python_files(ROOT) - built == set()
    assert WORD_LIST in built


def test_a_subpackage_added_later_is_built_too(tmp_path):
    """What a list written by hand forgets: a copy of the tree with one more package."""
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy2(os.path.join(ROOT, "setup.py"), tree)
    for top in PACKAGES:
        shutil.copytree(os.path.join(ROOT, top), tree / top,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))
    added = tree / "pinutil" / "added_later"
    added.mkdir()
    (added / "__init__.py").write_text("")
    (added / "part.py").write_text("VALUE = 1\n")
    built = built_files(str(tree), str(tmp_path / "lib"))
    assert {"pinutil/added_later/__init__.py", "pinutil/added_later/part.py"} <= built
    assert python_files(str(tree)) - built == set()
