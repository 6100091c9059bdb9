"""A software TPM per test: pytest fixture `swtpm` and `start_swtpm(dir)` for scripts.

Each simulator gets a fresh short absolute directory under /tmp (AF_UNIX paths are
limited to 108 bytes, pytest's tmp_path is often too deep) and dies with the process
that started it (PR_SET_PDEATHSIG), so a crashed test run leaves no simulator behind.
tpm2-tools is the out-of-band oracle for counters: it shares no code path with ours.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time

try:  # start_swtpm() also serves scripts (demo, benchmark) that run without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 5.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def tools_env(tcti: str) -> dict[str, str]:
    """Environment for tpm2-tools talking to `tcti`, with libtss2 logging off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSS2_", "TPM2TOOLS_"))}
    env["TPM2TOOLS_TCTI"] = tcti
    env["TSS2_LOG"] = "all+NONE"
    return env


class Swtpm:
    """One swtpm process on one state directory; restartable on the same state."""

    def __init__(self, state_dir: str) -> None:
        if not os.path.isabs(state_dir):
            # A relative --tpmstate puts swtpm into failure mode (tpm-facts.md).
            raise ValueError("swtpm state dir must be absolute")
        self.state_dir = state_dir
        self.sock = os.path.join(state_dir, "sock")
        self.tcti = f"swtpm:path={self.sock}"
        self.log = os.path.join(state_dir, "swtpm.log")
        self.proc: subprocess.Popen | None = None

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        """Start swtpm on this state dir and wait until its socket accepts."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("swtpm already running")
        for path in (self.sock, self.sock + ".ctrl"):
            if os.path.exists(path):
                os.unlink(path)
        with open(self.log, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [
                    "swtpm", "socket", "--tpm2",
                    "--tpmstate", f"dir={self.state_dir}",
                    "--server", f"type=unixio,path={self.sock}",
                    "--ctrl", f"type=unixio,path={self.sock}.ctrl",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # A file, not a pipe: nobody reads a pipe during a long run, and a full pipe
                # would stall swtpm mid-command (a "hung TPM" of our own making).
                stderr=log,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no Python locks touched
                close_fds=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not (os.path.exists(self.sock) and os.path.exists(self.sock + ".ctrl")):
            if self.proc.poll() is not None:
                with open(self.log, "rb") as f:
                    err = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"swtpm exited with {self.proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("swtpm did not create its socket in time")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop swtpm cleanly (SIGTERM, it saves its state) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused swtpm cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL swtpm: an unclean TPM stop, as with a power cut."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the TPM hangs with its sockets still open."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    # -- out-of-band oracle (tpm2-tools) ------------------------------------------
    def tools(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a tpm2-tools command against this TPM."""
        return subprocess.run(
            list(args), env=tools_env(self.tcti), input=input, capture_output=True,
            check=check, timeout=30, cwd=self.state_dir,
        )

    def read_pin_counter(self, handle: int) -> tuple[int, int]:
        """(pinCount, pinLimit) of a PIN index, read as owner: spends no attempt."""
        out = self.tools("tpm2_nvread", "-C", "o", "-s", "8", hex(handle)).stdout
        if len(out) != 8:
            raise AssertionError(f"tpm2_nvread returned {len(out)} bytes")
        return int.from_bytes(out[:4], "big"), int.from_bytes(out[4:], "big")

    def nv_handles(self) -> list[int]:
        """Handles of all defined NV indices (tpm2_getcap handles-nv-index)."""
        out = self.tools("tpm2_getcap", "handles-nv-index").stdout.decode()
        return [int(line.strip().lstrip("- "), 16) for line in out.splitlines() if line.strip()]


def start_swtpm(state_dir: str) -> Swtpm:
    """Start a simulator on `state_dir` (absolute, created if missing); for scripts."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    tpm = Swtpm(state_dir)
    tpm.start()
    return tpm


def fresh_swtpm():
    """A fresh swtpm in its own /tmp/pypam-tpm-* dir; killed and removed afterwards.
    A generator, so fixtures needing more than one TPM can `yield from` it."""
    state_dir = tempfile.mkdtemp(prefix="pypam-tpm-", dir="/tmp")
    tpm = Swtpm(state_dir)
    try:
        tpm.start()
        yield tpm
    finally:
        proc = tpm.proc
        tpm.kill()
        assert proc is None or proc.poll() is not None, "swtpm survived teardown"
        shutil.rmtree(state_dir, ignore_errors=True)
        assert not os.path.exists(state_dir)


if pytest is not None:
    swtpm = pytest.fixture(fresh_swtpm, name="swtpm")
