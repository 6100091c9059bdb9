"""Drive the C test host `build/pamhost`: the tests (through tests/support/pamhost.py),
the demo and the benchmark.

The host runs real PAM transactions with `pam_start_confdir` against a private
service directory, so nothing here reads or touches /etc/pam.d. `run_pam` starts
it in a fresh process (PAM modules change process-global state), hands it the
scripted answers through a pipe (they may be secrets: never argv), and returns
its JSON report as a dict.

The report arrives on its own pipe (`--report-fd`), so whatever a PAM module
writes to fds 1/2 is captured separately as `report["stdout"]` /
`report["stderr"]`: tests can assert a module prints nothing.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_SOURCE = os.path.join(ROOT, "tests", "host", "pamhost.c")
HOST_BINARY = os.path.join(ROOT, "build", "pamhost")
PAM_PYPAM_SO = os.path.join(ROOT, "build", "pam_pypam.so")
SECURITY_DIR = "/lib/x86_64-linux-gnu/security"
PAM_WRAPPER_DIR = "/usr/lib/x86_64-linux-gnu/pam_wrapper"

# PAM return codes (security/_pam_types.h, Linux-PAM 1.5). Not pypam.constants: the
# tests' oracle keeps its own copy of libpam's table rather than trust the code it checks.
PAM_SUCCESS = 0
PAM_OPEN_ERR = 1
PAM_SYMBOL_ERR = 2
PAM_SERVICE_ERR = 3
PAM_SYSTEM_ERR = 4
PAM_BUF_ERR = 5
PAM_PERM_DENIED = 6
PAM_AUTH_ERR = 7
PAM_CRED_INSUFFICIENT = 8
PAM_AUTHINFO_UNAVAIL = 9
PAM_USER_UNKNOWN = 10
PAM_MAXTRIES = 11
PAM_NEW_AUTHTOK_REQD = 12
PAM_ACCT_EXPIRED = 13
PAM_SESSION_ERR = 14
PAM_CRED_UNAVAIL = 15
PAM_CRED_EXPIRED = 16
PAM_CRED_ERR = 17
PAM_NO_MODULE_DATA = 18
PAM_CONV_ERR = 19
PAM_AUTHTOK_ERR = 20
PAM_AUTHTOK_RECOVERY_ERR = 21
PAM_AUTHTOK_LOCK_BUSY = 22
PAM_AUTHTOK_DISABLE_AGING = 23
PAM_TRY_AGAIN = 24
PAM_IGNORE = 25
PAM_ABORT = 26
PAM_AUTHTOK_EXPIRED = 27
PAM_MODULE_UNKNOWN = 28
PAM_BAD_ITEM = 29
PAM_CONV_AGAIN = 30
PAM_INCOMPLETE = 31

#: code -> "PAM_..." name, e.g. PAM_NAMES[7] == "PAM_AUTH_ERR"
PAM_NAMES: dict[int, str] = {
    value: name for name, value in dict(globals()).items()
    if name.startswith("PAM_") and isinstance(value, int)
}

# Conversation message styles (security/_pam_types.h).
PAM_PROMPT_ECHO_OFF = 1
PAM_PROMPT_ECHO_ON = 2
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4

#: The environment a host gets unless a test adds to it: nothing inherited.
CLEAN_ENV: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}

_COMPILE = ["gcc", "-O2", "-Wall", "-Wextra"]
_LINK = ["-lpam", "-lpthread"]
_REPORT_FD_ARG = "--report-fd"


class PamHostError(RuntimeError):
    """The host did not produce a report (usage error, crash, timeout)."""


class PamHostTimeout(PamHostError):
    """The host ran longer than the timeout and was killed."""


# -- building -----------------------------------------------------------------------
def build_host(force: bool = False) -> str:
    """Compile build/pamhost if missing or older than its source; return its path.

    Compiles to a temporary name and renames, under a lock, so parallel test
    workers never run a half-written binary.
    """
    os.makedirs(os.path.dirname(HOST_BINARY), exist_ok=True)
    with open(HOST_BINARY + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _is_fresh(HOST_BINARY, HOST_SOURCE):
            return HOST_BINARY
        tmp = f"{HOST_BINARY}.tmp.{os.getpid()}"
        cmd = [*_COMPILE, "-o", tmp, HOST_SOURCE, *_LINK]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PamHostError(f"compiling pamhost failed:\n{done.stderr}")
        os.replace(tmp, HOST_BINARY)
    return HOST_BINARY


def _is_fresh(binary: str, source: str) -> bool:
    try:
        return os.stat(binary).st_mtime >= os.stat(source).st_mtime
    except FileNotFoundError:
        return False


# -- service directories ------------------------------------------------------------
class PamService:
    """A private pam.d-style directory for pam_start_confdir.

    World-readable (0755, files 0644) so hosts dropped to `nobody` can read it;
    nothing in it is secret.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or tempfile.mkdtemp(prefix="pypam-pamd-", dir="/tmp")
        os.chmod(self.path, 0o755)

    def write(self, service: str, text: str) -> str:
        """Write (replace) the service file `service`; return its path."""
        if not service or "/" in service or service in (".", ".."):
            raise ValueError(f"bad service name {service!r}")
        target = os.path.join(self.path, service)
        with open(target, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.chmod(target, 0o644)
        return target

    def remove(self) -> None:
        """Delete the directory and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# -- running ------------------------------------------------------------------------
def run_pam(
    confdir: PamService | str,
    service: str,
    user: str | None = "someone",
    stages: Sequence[str] = ("auth",),
    answers: Sequence[str | bytes] = (),
    items: Mapping[str, str] | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = 60,
    preexec: Callable[[], None] | None = None,
    extra_args: Sequence[str] = (),
    host: str | None = None,
    *,
    prefix: Sequence[str] = (),
    check: bool = True,
) -> dict[str, Any]:
    """Run one pamhost process and return its parsed JSON report.

    - `user=None` starts PAM without a user (modules then prompt for it).
    - `answers` answer the prompts in order (str is UTF-8 encoded; bytes are sent
      as is, so invalid UTF-8 and newlines are fine; NUL is not representable).
    - `items` are pam_set_item'd before the stages (tty, rhost, ruser, ...).
    - `env` is added to the clean environment `CLEAN_ENV`; a None value removes
      a variable.  Nothing from the test runner's environment leaks in.
    - `prefix` goes before the host (e.g. `["setpriv", "--reuid=nobody", ...]`),
      `host` replaces the binary (e.g. a set-id copy), `extra_args` follow the
      generated arguments (e.g. `["--repeat", "100"]`).
    - `check=False` returns `{"report": None, ...}` instead of raising when the
      host dies without a report (e.g. a module crashed it).

    Besides the host's own fields the result has `exit_status` (negative: the
    signal), `stdout` and `stderr` (what the modules wrote; the report itself
    travels on a separate pipe).  Every string in the report is decoded from
    the host's byte-escaped JSON as UTF-8 (invalid bytes as surrogates).
    """
    binary = host or build_host()
    payload = _encode_answers(answers)
    answers_r, answers_w = os.pipe()
    report_r, report_w = os.pipe()
    argv = [
        *prefix, binary,
        "--confdir", os.fspath(confdir), "--service", service,
        "--stages", ",".join(stages),
        "--answers-fd", str(answers_r), "--answers-nul",
        _REPORT_FD_ARG, str(report_w),
    ]
    if user is not None:
        argv += ["--user", user]
    for name, value in (items or {}).items():
        argv += ["--item", f"{name}={value}"]
    argv += list(extra_args)

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_host_env(env),
            pass_fds=(answers_r, report_w),
            # Our feeder/reader threads start only after the fork.
            preexec_fn=preexec,  # noqa: PLW1509
            start_new_session=True,  # so a timeout can kill helpers too
        )
    except BaseException:
        for fd in (answers_r, answers_w, report_r, report_w):
            os.close(fd)
        raise
    os.close(answers_r)
    os.close(report_w)

    writer = threading.Thread(target=_feed, args=(answers_w, payload), daemon=True)
    report_chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(report_r, report_chunks), daemon=True)
    writer.start()
    reader.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise PamHostTimeout(f"pamhost ran over {timeout} s: {' '.join(argv)}") from None
    finally:
        writer.join(timeout=5)
        # A helper that a module left running may still hold the report pipe.
        reader.join(timeout=5)
    return _assemble(proc.returncode, b"".join(report_chunks), out, err, check)


def result_code(report: Mapping[str, Any], stage: str, occurrence: int = 0) -> int | None:
    """The rc of the `occurrence`-th run of `stage` (0 = first), or None."""
    runs = [s for s in report.get("stages", ()) if s["stage"] == stage]
    return runs[occurrence]["rc"] if -len(runs) <= occurrence < len(runs) else None


def result_name(report: Mapping[str, Any], stage: str, occurrence: int = 0) -> str | None:
    """The PAM code name ("PAM_AUTH_ERR", ...) of a stage's rc, or None if it did not run."""
    rc = result_code(report, stage, occurrence)
    return None if rc is None else PAM_NAMES.get(rc, f"PAM_UNKNOWN({rc})")


def prompts(report: Mapping[str, Any]) -> list[str]:
    """Texts of the prompts (echo off/on) the conversation was shown."""
    return [
        m["text"] for m in report.get("messages", ())
        if m["style"] in (PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON)
    ]


# -- helpers ------------------------------------------------------------------------
def _encode_answers(answers: Sequence[str | bytes]) -> bytes:
    if isinstance(answers, (str, bytes)):
        raise TypeError("answers must be a sequence of answers, not one string")
    records = []
    for answer in answers:
        raw = answer.encode("utf-8", "surrogateescape") if isinstance(answer, str) else bytes(answer)
        if b"\0" in raw:
            raise ValueError("a PAM answer is a C string and cannot contain NUL")
        records.append(raw + b"\0")
    return b"".join(records)


def _host_env(extra: Mapping[str, str | None] | None) -> dict[str, str]:
    env = dict(CLEAN_ENV)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _feed(fd: int, payload: bytes) -> None:
    """Write the answers and close: the host reads until EOF before PAM starts."""
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass  # the host exited early (e.g. usage error); its status tells why
    finally:
        os.close(fd)


def _drain(fd: int, chunks: list[bytes]) -> None:
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _assemble(status: int, raw: bytes, out: bytes, err: bytes, check: bool) -> dict[str, Any]:
    captured = {
        "exit_status": status,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
    }
    report: dict[str, Any] | None = None
    if status == 0 and raw:
        try:
            report = _unescape_bytes(json.loads(raw.decode("ascii")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PamHostError(f"pamhost wrote an unreadable report: {exc}: {raw[:200]!r}") from exc
    if report is None:
        if check:
            why = f"signal {-status}" if status < 0 else f"exit status {status}"
            raise PamHostError(f"pamhost gave no report ({why}); stderr:\n{captured['stderr']}")
        return {"report": None, **captured}
    report.update(captured)
    return report


def _unescape_bytes(value: Any) -> Any:
    """Undo the host's byte escaping: each char < 256 is one byte of UTF-8."""
    if isinstance(value, str):
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    if isinstance(value, list):
        return [_unescape_bytes(v) for v in value]
    if isinstance(value, dict):
        return {_unescape_bytes(k): _unescape_bytes(v) for k, v in value.items()}
    return value
