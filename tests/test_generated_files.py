"""Generated files are never part of the source: `make build` makes them, .gitignore
keeps them out of commits, and `make clean` removes them and nothing else."""
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the cffi builders named in setup.py write into the tree (build_ext --inplace).
CFFI_OUTPUTS = ("pypam/_libpam.py", "pinutil/tpm/_tss")


def _source_tree_copy(destination: str) -> None:
    shutil.copytree(ROOT, destination, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", "build", ".git", ".pytest_cache", ".hypothesis", "demo-state"))


def _files(top: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), top)
            for d, _, names in os.walk(top) for f in names}


def _generated(path: str) -> bool:
    return (path.startswith(CFFI_OUTPUTS) or "/__pycache__/" in f"/{path}"
            or path.endswith(".egg-info") or ".egg-info/" in path)


def test_make_clean_removes_exactly_the_generated_files(tmp_path):
    tree = str(tmp_path / "tree")
    _source_tree_copy(tree)
    before = _files(tree)
    assert "pypam/_libpam.py" in before, "make build generates it (the suite runs built)"
    # A make of its own: not a sub-make of the suite's (whose MAKEFLAGS would carry
    # PYPAM_IN_SAFE_COPY=1 when the suite itself runs in a safe copy).
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYPAM_IN_SAFE_COPY")}
    done = subprocess.run(["make", "-s", "clean"], cwd=tree, capture_output=True, text=True,
                          check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    removed = before - _files(tree)
    assert removed == {p for p in before if _generated(p)}


def test_generated_files_are_ignored_never_committed():
    with open(os.path.join(ROOT, ".gitignore")) as f:
        ignored = f.read().split("\n")
    assert "/pypam/_libpam.py" in ignored and "*.so" in ignored
    if os.path.isdir(os.path.join(ROOT, ".git")):  # a checkout (the safe copy has no .git)
        tracked = subprocess.run(["git", "ls-files", "pypam", "pinutil"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
        assert not [p for p in tracked if _generated(p)]
