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
# Inside the core, each part never imports what is built on it: base files (errors,
# record, users, ...) < tpm/ < pin/ and master_key/ (side by side) < service/ < cli/.
# One way down: pinutild's caller's side (stdlib only), which the login backends use.
SERVICE_CLIENT = ("pinutil.service.client", "pinutil.service.protocol")
ABOVE = ("pinutil.tpm", "pinutil.pin", "pinutil.master_key", "pinutil.service", "pinutil.cli")
CORE_NEVER = {
    "pinutil (base files)": ABOVE,
    "pinutil/tpm": ABOVE[1:],
    "pinutil/pin": ("pinutil.master_key", "pinutil.service", "pinutil.cli"),
    "pinutil/master_key": ("pinutil.pin", "pinutil.service", "pinutil.cli"),
    "pinutil/service": ("pinutil.cli",),
}

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


def core_part_files(part: str) -> list[str]:
    if part == "pinutil (base files)":
        return sorted(os.path.join(ROOT, "pinutil", f) for f in os.listdir(
            os.path.join(ROOT, "pinutil")) if f.endswith(".py") and f != "__main__.py")
    return layer_files(part)


@pytest.mark.parametrize("part", sorted(CORE_NEVER))
def test_no_part_of_the_core_imports_what_is_built_on_it(part):
    wrong = [(os.path.relpath(path, ROOT), name) for path in core_part_files(part)
             for name in imported_names(path)
             if any(_matches(name, prefix) for prefix in CORE_NEVER[part])
             and name != "pinutil.service"  # `from pinutil.service import client`
             and not any(_matches(name, client) for client in SERVICE_CLIENT)]
    assert not wrong


def test_the_checker_sees_imports_inside_functions_and_relative_ones():
    package = os.path.join(ROOT, "pypam")
    names = imported_names(os.path.join(package, "dispatch.py"))
    assert "pypam.arguments" in names  # `from .arguments import ...`
    names = imported_names(os.path.join(ROOT, "modules", "master_key.py"))
    assert "pinutil.deadline" in names  # imported inside authenticate()
