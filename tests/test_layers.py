"""Who may import whom (docs/ARCHITECTURE.md), read from the source: every import
statement of every file of a layer, top level or inside a function, is checked
against what that layer must never import.

Run-time checks of the same rules live beside the code they guard:
tests/test_import_budget.py (what each PAM hook loads, through the real shim),
tests/stack/test_layers.py (pypam.stack off the login path, stdlib only),
tests/test_master_key.py and tests/test_pin_index.py (no admin or heavy imports on
the login path).
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# layer (a folder) -> module prefixes none of its files may import
NEVER = {
    "pypam": ("pinutil", "modules", "devtools", "tests", "bench"),  # knows nothing of TPMs
    "pinutil": ("pypam", "devtools", "tests", "bench"),  # the core: no PAM framework
    "modules": ("pinutil.cli", "devtools", "tests", "bench"),  # adapters: core only
    "devtools": ("tests", "bench"),  # the tests, demo and bench build on it
    "bench": ("tests",),
    "examples": ("tests",),
}
# Inside the core, the TPM layer knows TPM commands, not what is built on them.
TPM_NEVER = ("pinutil.pin", "pinutil.master_key", "pinutil.service", "pinutil.cli")
# The core below the command line never imports it (the command imports the core).
CLI = "pinutil.cli"
CLI_USERS = ("pinutil/cli/", "pinutil/__main__.py")


def imported_names(path: str) -> set[str]:
    """Every module an import statement in `path` names (relative ones resolved)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def layer_files(layer: str) -> list[str]:
    found = []
    for directory, _, files in os.walk(os.path.join(ROOT, layer)):
        found += [os.path.join(directory, f) for f in files if f.endswith(".py")]
    assert found, layer
    return sorted(found)


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("layer", sorted(NEVER))
def test_no_layer_imports_what_it_must_not(layer):
    wrong = []
    for path in layer_files(layer):
        for name in imported_names(path):
            if any(_matches(name, prefix) for prefix in NEVER[layer]):
                wrong.append((os.path.relpath(path, ROOT), name))
    assert not wrong


def test_the_core_never_imports_the_command_line():
    wrong = []
    for path in layer_files("pinutil"):
        where = os.path.relpath(path, ROOT)
        if where.startswith(CLI_USERS):
            continue
        wrong += [(where, name) for name in imported_names(path) if _matches(name, CLI)]
    assert not wrong


def test_the_tpm_layer_never_imports_what_is_built_on_it():
    wrong = [(os.path.relpath(path, ROOT), name) for path in layer_files("pinutil/tpm")
             for name in imported_names(path) if any(_matches(name, p) for p in TPM_NEVER)]
    assert not wrong


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    package = os.path.join(ROOT, "pypam")
    names = imported_names(os.path.join(package, "dispatch.py"))
    assert "pypam.arguments" in names  # `from .arguments import ...`
    names = imported_names(os.path.join(ROOT, "modules", "master_key.py"))
    assert "pinutil.deadline" in names  # imported inside authenticate()
