"""pinutil.setid.running_setid, the one "am I set-id?" answer (login backends, CLI),
asked in fresh processes made set-id for real: a set-uid-root copy of python3 run by
nobody (AT_SECURE, ids differ), a copy with a file capability (AT_SECURE, ids equal),
and a root process that changed its ids after exec (no AT_SECURE, ids differ)."""
from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.accounts import AS_NOBODY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASK = ("import sys; sys.path.insert(0, sys.argv[1]); {before}"
       "from pinutil.setid import running_setid; print(running_setid())")
PYTHON = os.path.realpath("/usr/bin/python3")  # the interpreter the shim embeds


def answer(command: list[str], before: str = "") -> str:
    done = subprocess.run([*command, "-I", "-c", ASK.format(before=before), ROOT],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def python_copy():
    """A root-owned copy of python3 in a root-owned 0755 directory nobody can reach."""
    directory = tempfile.mkdtemp(prefix="pypam-setid-", dir="/tmp")
    os.chmod(directory, 0o755)
    copy = os.path.join(directory, "python3")
    shutil.copy2(PYTHON, copy)
    os.chown(copy, 0, 0)
    try:
        yield copy
    finally:
        shutil.rmtree(directory)


def test_an_ordinary_process_is_not_setid():
    assert answer([PYTHON]) == "False"
    assert answer([*AS_NOBODY, PYTHON]) == "False"  # other ids, but its own after exec


def test_a_setuid_root_program_run_by_nobody_is(python_copy):
    os.chmod(python_copy, 0o4755)
    assert answer([*AS_NOBODY, python_copy]) == "True"


def test_a_program_with_file_capabilities_is_though_its_ids_are_equal(python_copy):
    subprocess.run(["setcap", "cap_net_bind_service+ep", python_copy], check=True)
    assert answer([*AS_NOBODY, python_copy]) == "True"


def test_ids_changed_after_exec_count_too():
    assert answer([PYTHON], before="import os; os.setresuid(65534, 0, 0); ") == "True"


def test_the_login_backends_and_the_cli_ask_the_same_question():
    from pinutil import setid
    from pinutil.cli import app
    from pinutil.pin import login

    assert app.running_setid is setid.running_setid
    # The login path imports it only where `auto` may pick the direct backend (it is
    # not loaded on the daemon path): the same function, never a copy of its own.
    assert not hasattr(login, "running_setid")
    assert "from pinutil.setid import running_setid" in inspect.getsource(login.choose_backend)
