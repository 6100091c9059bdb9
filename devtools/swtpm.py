"""A software TPM (swtpm) for development: the tests' fixture, the demo and the benchmark
all start their simulators here.

Each simulator dies with the process that started it (PR_SET_PDEATHSIG), so a crashed
run leaves no simulator behind.

start() returns only once the TPM answers: a socket file appears at bind(), before
swtpm listens on it and before it sets the file's mode, so "the file exists" let tests
race swtpm (ECONNREFUSED, seen as "cannot open the TPM (swtpm): 0xa000a", and a mode
reset after a test's own chmod). swtpm sets the sockets' mode itself (SOCKET_MODE, from
--server/--ctrl mode=); who may reach them is decided by the state directory's mode,
0700 unless a test opens it.
tpm2-tools is the out-of-band oracle for counters: it shares no code path with ours.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import struct
import subprocess
import time

_PR_SET_PDEATHSIG = 1
_START_TIMEOUT_S = 10.0
#: Mode of both sockets, set by swtpm before it listens. Reaching them is gated by the
#: state directory (0700 from mkdtemp; a test that lets `nobody` in opens the directory).
SOCKET_MODE = 0o666

# TPM2_GetRandom(8): answered with TPM_RC_SUCCESS only by a started TPM.
_GET_RANDOM = struct.pack(">HIIH", 0x8001, 12, 0x17B, 8)
_CMD_GET_CAPABILITY = struct.pack(">I", 1)  # swtpm control channel (swtpm-ioctls(3))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (runs in a child between fork and exec)."""
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
        # The owner password the oracle reads with (set by tests of `pinutil owner`).
        self.owner_auth = b""

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        """Start swtpm on this state dir; return once both channels answer a command."""
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
                    "--server", f"type=unixio,path={self.sock},mode=0{SOCKET_MODE:o}",
                    "--ctrl", f"type=unixio,path={self.sock}.ctrl,mode=0{SOCKET_MODE:o}",
                    "--flags", "not-need-init,startup-clear",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # A file, not a pipe: nobody reads a pipe during a long run, and a full pipe
                # would stall swtpm mid-command (a "hung TPM" of our own making).
                stderr=log,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, no Python locks touched
                close_fds=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT_S
        ctrl = self._ask(self.sock + ".ctrl", _CMD_GET_CAPABILITY, 8, deadline)
        if ctrl[:4] != b"\0\0\0\0":
            self.kill()
            raise RuntimeError(f"swtpm control channel answered {ctrl.hex()}")
        answer = self._ask(self.sock, _GET_RANDOM, 10, deadline)
        if answer[:2] != b"\x80\x01" or answer[6:10] != b"\0\0\0\0":
            self.kill()
            raise RuntimeError(f"swtpm answered TPM2_GetRandom with {answer.hex()}")

    def _ask(self, path: str, request: bytes, want: int, deadline: float,
             whole: bool = False) -> bytes:
        """Send `request` on a fresh connection to `path` once swtpm listens there; return
        the first `want` bytes of its answer (`whole`: the whole TPM response). Retries
        until swtpm is up or has died."""
        while True:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(max(0.1, deadline - time.monotonic()))
                    s.connect(path)
                    s.sendall(request)
                    answer = b""
                    while len(answer) < want:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        answer += chunk
                        if whole and len(answer) >= 10:  # the header gives the size
                            want = max(want, int.from_bytes(answer[2:6], "big"))
                    if len(answer) >= want:
                        return answer
            except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError,
                    BrokenPipeError):
                pass  # not listening yet
            except TimeoutError:
                pass
            if self.proc.poll() is not None:
                with open(self.log, "rb") as f:
                    err = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"swtpm exited with {self.proc.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"swtpm did not answer on {path} in time")
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
        out = self.tools("tpm2_nvread", "-C", "o", "-P", f"hex:{self.owner_auth.hex()}",
                         "-s", "8", hex(handle)).stdout
        if len(out) != 8:
            raise AssertionError(f"tpm2_nvread returned {len(out)} bytes")
        return int.from_bytes(out[:4], "big"), int.from_bytes(out[4:], "big")

    def loaded_handles(self) -> list[int]:
        """Transient objects and loaded sessions in the TPM, asked with a raw
        TPM2_GetCapability on a connection of our own (no TSS code involved). swtpm has
        no resource manager: what a client leaves loaded stays until flushed."""
        handles = []
        for first in (0x80000000, 0x02000000, 0x03000000):  # transient, HMAC, policy
            answer = self._command(0x17A, struct.pack(">III", 1, first, 64))
            count = struct.unpack(">I", answer[15:19])[0]
            handles += struct.unpack(f">{count}I", answer[19:19 + 4 * count])
        return handles

    def flush(self, handle: int) -> None:
        """TPM2_FlushContext on one handle (raw, as loaded_handles)."""
        self._command(0x165, struct.pack(">I", handle))

    def _command(self, code: int, body: bytes) -> bytes:
        request = struct.pack(">HII", 0x8001, 10 + len(body), code) + body
        answer = self._ask(self.sock, request, 10, time.monotonic() + _START_TIMEOUT_S,
                           whole=True)
        rc = int.from_bytes(answer[6:10], "big")
        if rc != 0:
            raise AssertionError(f"TPM command {code:#x} failed: {rc:#x}")
        return answer

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
