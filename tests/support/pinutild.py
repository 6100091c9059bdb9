"""A real pinutild per test: fixtures `pinutild` (on the test's `pin_env` and swtpm) and
`pinutild_policy` (the same, with the environment's policy naming its socket as
`service_socket`, for PAM tests of `backend=daemon` and `auto`).

The service runs as root here, as its own process (devtools/pinutild.py, which the demo
and the benchmark use too), on a socket in the environment's work directory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from devtools.pinutild import PYTHON, ROOT, Pinutild, wait_for_listener
from tests.support.accounts import AS_NOBODY

# AS_NOBODY is defined in tests.support.accounts (every setpriv line is built there) and
# also importable from here, where service tests have long taken it.
__all__ = ["AS_NOBODY", "PYTHON", "ROOT", "Pinutild", "pinutild", "pinutild_policy",
           "start_pinutild", "tpm_code", "wait_for_listener"]


#: Loaded without TPM code: the package, its docstring and the owner NV range (constants,
#: no imports; the policy checks nv_base against it).
NOT_TPM_CODE = {"pinutil.tpm"}


def tpm_code(modules: list[str]) -> list[str]:
    """Of a process's sys.modules: the TPM binding, the TPM layer's modules, the PIN
    index, the master key's TPM code, tpm2-pytss, cryptography."""
    return [m for m in modules if m not in NOT_TPM_CODE and (
        m.startswith(("pinutil.tpm", "pinutil.pin.index", "pinutil.master_key.token",
                      "tpm2_pytss", "cryptography"))
        or "_tss" in m)]


@pytest.fixture
def pinutild(pin_env) -> Iterator[Pinutild]:
    """pinutild on this test's policy and swtpm, listening in its work directory."""
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "pinutild.sock"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def pinutild_policy(pin_env, pinutild) -> Pinutild:
    """`pinutild`, and the environment's policy (now and after any rewrite) names its
    socket, so tpm_pin's `daemon` and `auto` backends reach it."""
    pin_env.policy_extra["service_socket"] = pinutild.socket
    pin_env.write_policy()
    return pinutild


def start_pinutild(pin_env, *extra: str, name: str = "pinutild2.sock") -> Pinutild:
    """Another service on the same environment, with extra options (stop it yourself)."""
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, name), extra)
    service.start()
    return service


def login_through_stand_in(pin_env, script: str, args: list[str], name: str,
                           answers: list[str], check: bool = True) -> dict:
    """A tpm_pin login (as root, backend=daemon) against a stand-in service: `script`,
    run as `python -c script SOCKET ROOT *args`, prints "ready" once it listens."""
    path = os.path.join(pin_env.dir, f"{name}.sock")
    stand_in = subprocess.Popen([sys.executable, "-I", "-c", script, path, ROOT, *args],
                                stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert stand_in.stdout.readline() == "ready\n"
        pin_env.policy_extra["service_socket"] = path
        pin_env.write_policy()
        svc = pin_env.service(name, pin_env.tpm_pin_line(backend="daemon"))
        return pin_env.run(svc, user="root", answers=answers, check=check)
    finally:
        stand_in.kill()
        stand_in.wait()
