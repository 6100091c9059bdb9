"""Helpers for tests that run the test-only pypam modules in tests/pypam_modules/."""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support.pamhost import PAM_PYPAM_SO, PAM_TEXT_INFO, ROOT

MODULE_DIR = os.path.join(ROOT, "tests", "pypam_modules")
KINDS = {"auth": "auth", "setcred": "auth", "delcred": "auth", "acct": "account",
         "open": "session", "close": "session", "chauthtok": "password"}
#: Every non-success code of the module reaches the application unchanged.
PASS_THROUGH = "[success=ok default=die]"


def pypam_line(kind: str, module: str | None, *args: str, control: str = PASS_THROUGH,
               moduledir: str | None = MODULE_DIR, shim: str = PAM_PYPAM_SO) -> str:
    """One pam.d line running pam_pypam.so with `module=` and `moduledir=`."""
    words = [kind, control, shim]
    if module is not None:
        words.append(f"module={module}")
    if moduledir is not None:
        words.append(f"moduledir={moduledir}")
    words += args
    return " ".join(words) + "\n"


def pypam_service(module: str, *args: str, kinds: Sequence[str] = ("auth", "account",
                  "session", "password"), **kw: Any) -> str:
    """A service file with the same module line for each of `kinds`."""
    return "".join(pypam_line(kind, module, *args, **kw) for kind in kinds)


def reports(report: Mapping[str, Any]) -> list[Any]:
    """The JSON payloads modules sent as `report:` info messages, in order."""
    return [json.loads(m["text"][len("report:"):]) for m in report.get("messages", ())
            if m["style"] == PAM_TEXT_INFO and m["text"].startswith("report:")]


def stage_rcs(report: Mapping[str, Any]) -> list[int]:
    return [s["rc"] for s in report["stages"]]


def assert_trusted_tree(path: str) -> None:
    """`path` and every ancestor: root-owned and not group/world-writable (sticky ok)."""
    current = os.path.realpath(path)
    while True:
        st = os.stat(current)
        sticky = st.st_mode & stat.S_ISVTX
        assert st.st_uid == 0, f"{current} is owned by uid {st.st_uid}"
        assert not (st.st_mode & 0o022) or sticky, f"{current} is group/world-writable"
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def assert_trusted_modules(directory: str = MODULE_DIR) -> None:
    """What the loader demands of a module directory and its .py files."""
    assert_trusted_tree(directory)
    for name in os.listdir(directory):
        if name.endswith(".py"):
            st = os.lstat(os.path.join(directory, name))
            assert stat.S_ISREG(st.st_mode), name
            assert st.st_uid == 0 and not st.st_mode & 0o022, (name, oct(st.st_mode))
