"""The benchmark's rows: one `Case` per PAM stack to measure.

To add a row (e.g. PIN login against a swtpm), append a Case to `CASES`. Its
`pam_lines` is a service file, `str.format`ted with the `Context` fields plus
whatever its `setup` yields; `setup` is a context manager factory that may start
things (a simulator), write files into `ctx.workdir`, and must clean up after
itself; it raises `Skip` when the case cannot run on this machine.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAM_PYTHON_CANDIDATES = (
    "/lib/security/pam_python.so",  # where Debian 12's libpam-python puts it
    "/lib/x86_64-linux-gnu/security/pam_python.so",
)


class Skip(Exception):
    """This case cannot run here; the message says why."""


@dataclass(frozen=True)
class Context:
    """Paths every case may use in its pam_lines (as {root}, {workdir}, ...)."""

    root: str          # repository root
    workdir: str       # private temporary directory of this bench run
    modules: str       # bench/modules: the trivial modules
    pypam_so: str      # build/pam_pypam.so
    pam_python_so: str  # Debian's pam_python.so, or "" if not installed


Setup = Callable[[Context], AbstractContextManager[dict[str, str]]]


@contextlib.contextmanager
def no_setup(ctx: Context) -> Iterator[dict[str, str]]:
    """For cases that need nothing beyond the Context."""
    yield {}


@dataclass(frozen=True)
class Case:
    """One row of the benchmark."""

    name: str
    pam_lines: str
    stages: tuple[str, ...] = ("auth",)
    user: str = "root"
    answers: tuple[str, ...] = ()
    expect: int = 0              # the rc the last stage must return (PAM_SUCCESS)
    setup: Setup = no_setup
    cold: bool = True            # measured one transaction per new process
    repeat: int | None = None    # repeated transactions: None = --repeat, 0 = skip
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)


# -- setups ---------------------------------------------------------------------------
@contextlib.contextmanager
def needs_pypam(ctx: Context) -> Iterator[dict[str, str]]:
    """The shim is built by `make build`; the bench never builds it."""
    if not os.path.exists(ctx.pypam_so):
        raise Skip(f"{ctx.pypam_so} not built (make build)")
    yield {}


@contextlib.contextmanager
def needs_pam_python(ctx: Context) -> Iterator[dict[str, str]]:
    if not ctx.pam_python_so:
        raise Skip("Debian's libpam-python is not installed")
    yield {}


def find_pam_python() -> str:
    """Path of pam_python.so, or "" when absent."""
    return next((p for p in PAM_PYTHON_CANDIDATES if os.path.exists(p)), "")


# -- the rows -------------------------------------------------------------------------
CASES: list[Case] = [
    Case(
        name="pam_permit",
        pam_lines="auth required pam_permit.so\n",
        note="floor: libpam plus one trivial native module",
    ),
    Case(
        name="pam_unix acct",
        pam_lines="account required pam_unix.so\n",
        stages=("acct",),
        repeat=0,
        note="anchor: native module doing a real passwd+shadow lookup for root"
             " (account stage, no password hashing)",
    ),
    Case(
        name="pam_python",
        # pam_python only loads modules given by absolute path.
        pam_lines="auth required {pam_python_so} {modules}/pam_python_trivial.py\n",
        setup=needs_pam_python,
        # pam_python restarts Python per handle (~17 ms, +2 MB each): 10,000 would
        # take minutes and gigabytes, so it gets a short run, extrapolated.
        repeat=200,
        note="Debian libpam-python, trivial module",
    ),
    Case(
        name="pam_pypam",
        pam_lines="auth required {pypam_so} module=bench_trivial moduledir={modules}\n",
        setup=needs_pypam,
        note="our shim, trivial module",
    ),
]


def _pin_case(backend: str, repeat: int | None) -> Case:
    from bench.pin import PIN, pin_daemon_setup, pin_setup

    return Case(
        name=f"tpm_pin {backend}",
        pam_lines=("auth required {pypam_so} module=tpm_pin policy={policy} "
                   f"backend={backend}\n"),
        answers=(PIN,),
        setup=pin_daemon_setup if backend == "daemon" else pin_setup,
        repeat=repeat,
        note=f"PIN login, {backend} backend, salted session, against a swtpm",
    )


def _floor_case() -> Case:
    from bench.pin import PIN, pin_daemon_setup

    return Case(
        name="pin-login floor",
        pam_lines=("auth required {pypam_so} module=bench_floor_login moduledir={modules} "
                   "socket={service_socket}\n"),
        answers=(PIN,),
        setup=pin_daemon_setup,
        repeat=0,
        note="the least a Python module can do for a PIN login through pinutild "
             "(bench/modules/bench_floor_login.py): the bound under tpm_pin daemon",
    )


# The helper backend starts a process per login: 2,000 repeats are plenty.
CASES += [_pin_case("direct", 2000), _pin_case("helper", 100), _pin_case("daemon", 2000),
          _floor_case()]
