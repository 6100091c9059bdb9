"""Run the same PAM stacks through real libpam and through pypam.stack, side by side.

A `Scenario` is a little pam.d directory (a service file, perhaps `other`, included
files, a vendor directory) whose module lines use build/stack_stub.so: each line's
arguments say what it returns and name a log file, so libpam's real call sequence can
be read back. `run_real` runs many scenarios in one build/stackhost process inside a
private mount namespace (bind mounts over /etc/pam.d and /usr/lib/pam.d, so Debian's
`@include` and the real lookup apply) or with pam_start_confdir; `run_simulated` asks
the simulator; `compare` lists every disagreement.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field

from pypam.stack import parser, simulate
from pypam.stack.model import Handler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUB = os.path.join(ROOT, "build", "stack_stub.so")
HOST = os.path.join(ROOT, "build", "stackhost")
MISSING_MODULE = "/nonexistent/pypam-stack-test/pam_missing.so"


def _installed_libpam() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libpam0g"], check=True,
                          capture_output=True, text=True).stdout


#: Debian's libpam0g on this machine. pypam.stack models 1.5.2 (Debian 12); libpam 1.7
#: (Debian 13) reads some pam.d corners differently (docs/pypam.md, NOTES): the tests
#: that reach those corners are expected to disagree there, strictly.
LIBPAM_VERSION = _installed_libpam()
LIBPAM_MODELLED = LIBPAM_VERSION.startswith("1.5.")
NOT_MODELLED_REASON = (f"pypam.stack models libpam 1.5.2; this machine has {LIBPAM_VERSION}, "
                       "which reads this corner of pam.d differently")

#: stackhost call name -> simulator stage, and the stub's function names per stage.
CALLS = {"auth": "auth", "setcred": "setcred", "acct": "account", "open": "session",
         "close": "close_session", "chauthtok": "password"}
STUB_FUNCTION = {"pam_sm_authenticate": "auth", "pam_sm_setcred": "setcred",
                 "pam_sm_acct_mgmt": "acct", "pam_sm_open_session": "open",
                 "pam_sm_close_session": "close"}


@dataclass
class Scenario:
    """Files to write (name -> bytes; "usr/NAME" goes to the vendor directory), the
    service to start and the calls to make. `mode` is "confdir" or "bind"."""

    files: dict[str, bytes]
    service: str
    calls: list[str]
    mode: str = "bind"
    vendor: bool = False           # bind-mount usr/ over /usr/lib/pam.d too
    workdir: str = ""              # set by `materialise`

    @property
    def etc(self) -> str:
        return os.path.join(self.workdir, "etc")

    @property
    def usr(self) -> str:
        return os.path.join(self.workdir, "usr")

    @property
    def log(self) -> str:
        return os.path.join(self.workdir, "log")


@dataclass
class Result:
    codes: list[int]                      # pam_start's code, then each call's
    calls: list[str] = field(default_factory=list)   # "TAG function" in order
    undefined: bool = False               # libpam's behaviour is undefined (simulator)
    fatal: str | None = None              # "crash", "hang" (libpam), or the simulator's


def stub_line_args(tag: str, log: str, codes: dict[str, int]) -> str:
    """The argument text of a stub module line."""
    parts = [f"log={log}", f"id={tag}"] + [f"{k}={v}" for k, v in codes.items()]
    return " ".join(parts)


def materialise(scenario: Scenario, workdir: str) -> None:
    """Write the scenario's files below `workdir` (its log path is `workdir`/log, which
    the generated files already name through the LOG placeholder)."""
    scenario.workdir = workdir
    os.makedirs(scenario.etc, exist_ok=True)
    os.makedirs(scenario.usr, exist_ok=True)
    for name, data in scenario.files.items():
        data = data.replace(b"@WORK@", workdir.encode())
        path = os.path.join(workdir, name if name.startswith("usr/") else "etc/" + name)
        if data == b"<dir>":
            os.makedirs(path, exist_ok=True)
            continue
        with open(path, "wb") as f:
            f.write(data)


def host_line(s: Scenario) -> str:
    if s.mode == "confdir":
        return f"{s.etc} - - {s.service} {' '.join(s.calls)}\n"
    usr = s.usr if s.vendor else "-"
    return f"- {s.etc} {usr} {s.service} {' '.join(s.calls)}\n"


def run_real(scenarios: list[Scenario]) -> list[Result]:
    """All scenarios through real libpam, one stackhost process."""
    outer = os.stat("/proc/self/ns/mnt").st_ino
    text = "".join(host_line(s) for s in scenarios)
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", HOST, str(outer)],
        input=text, capture_output=True, text=True, timeout=900, check=False)
    lines = done.stdout.splitlines()
    if done.returncode != 0:
        stuck = scenarios[len(lines)] if len(lines) < len(scenarios) else None
        raise RuntimeError(f"stackhost failed ({done.returncode}) at scenario {len(lines)}: "
                           f"{done.stderr[-2000:]}\n{describe(stuck) if stuck else ''}")
    if len(lines) != len(scenarios):
        raise RuntimeError(f"stackhost answered {len(lines)} of {len(scenarios)} lines")
    results = []
    for s, line in zip(scenarios, lines):
        try:
            with open(s.log, encoding="latin-1", newline="") as f:
                calls = f.read().split("\n")[:-1]    # tags may hold \r: not splitlines
        except FileNotFoundError:
            calls = []
        if line.startswith(("CRASH", "HANG")):
            results.append(Result([], calls, fatal=line.split()[0].lower()))
        else:
            results.append(Result([int(x) for x in line.split()], calls))
    return results


def _atoi(text: str) -> int:
    match = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


def stub_result(h: Handler, function: str, pass_: str) -> int:
    """What build/stack_stub.so returns for this line (its arguments say it)."""
    name = pass_ or STUB_FUNCTION[function]
    for key in (name, "rc"):
        for arg in h.args:
            if arg.startswith(key + "="):
                return _atoi(arg[len(key) + 1:])
    return 0


def _tag(h: Handler) -> str:
    for arg in h.args:
        if arg.startswith("id="):
            return arg[3:]
    return "?"


def locate_for(s: Scenario):
    """Where the simulator finds what libpam sees inside the host's namespace."""
    if s.mode == "confdir":
        return lambda path: path

    def locate(path: str) -> str:
        if path == "/etc/pam.d" or path.startswith("/etc/pam.d/"):
            return s.etc + path[len("/etc/pam.d"):]
        if s.vendor and (path == "/usr/lib/pam.d" or path.startswith("/usr/lib/pam.d/")):
            return s.usr + path[len("/usr/lib/pam.d"):]
        return path
    return locate


def run_simulated(s: Scenario) -> Result:
    stack = parser.load_service(s.service, confdir=s.etc if s.mode == "confdir" else None,
                                locate=locate_for(s))
    if stack.failure is not None:
        if stack.failure.fatal:
            return Result([], fatal=stack.failure.fatal,
                          undefined=stack.failure.fatal in ("undefined", "loop"))
        return Result([stack.failure.code])
    transaction = simulate.Transaction(stack, stub_result)
    codes = [0]
    calls = []
    for call in s.calls:
        outcome = transaction.call(CALLS[call])
        if outcome.undefined:
            return Result(codes, calls, undefined=True)
        codes.append(outcome.code)
        for step in outcome.steps:
            if step.called and (step.handler.path or "").endswith("stack_stub.so"):
                fn = step.pass_ or STUB_FUNCTION[_function_of(call)]
                calls.append(f"{_tag(step.handler)} {fn}")
    return Result(codes, calls)


def _function_of(call: str) -> str:
    return simulate.STAGES[CALLS[call]][1]


def describe(s: Scenario) -> str:
    listing = [f"--- {name}\n{data.decode('latin-1')}" for name, data in sorted(s.files.items())]
    return f"service {s.service} mode {s.mode} calls {s.calls}\n" + "\n".join(listing)


def compare(s: Scenario, real: Result, simulated: Result) -> str | None:
    """None when they agree (or libpam's own behaviour is undefined there: the
    simulator says so instead of guessing), else an account of the difference."""
    if simulated.undefined:
        return None
    if simulated.fatal and simulated.fatal == real.fatal:
        return None
    if real.fatal is None and simulated.fatal is None and (
            real.codes == simulated.codes and real.calls == simulated.calls):
        return None
    return (f"libpam:    codes {real.codes} calls {real.calls} {real.fatal or ''}\n"
            f"simulator: codes {simulated.codes} calls {simulated.calls} "
            f"{simulated.fatal or ''}\n" + describe(s))
