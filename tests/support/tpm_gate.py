"""A TPM that stops answering until the test lets it: a TpmProxy whose intercept holds
every command from the first one on, so that a test can order what the service does
(the first request is with the worker; the next ones are queued behind it)."""
from __future__ import annotations

import os
import threading

from tests.support.tpm_proxy import TpmProxy


class TpmGate:
    """The proxy's intercept: a TPM that stops answering at the first command after it
    is built, and answers again (each held command then reaches the real TPM, as the
    bytes a stopped TPM left in its socket would) once `open()` is called. `seen` is
    set when the first command is held: its job is then with the service's worker, a
    real happens-before for what the test sends next (no guessing how fast the worker
    picks it up)."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self._open = threading.Event()

    def __call__(self, command: bytes, forward) -> bytes:
        if not self._open.is_set():
            self.seen.set()
            self._open.wait()
        return forward(command)

    def open(self) -> None:
        self._open.set()


def gated_tpm(pin_env) -> tuple[TpmProxy, TpmGate]:
    """A proxy holding the TPM's commands (`TpmGate`) between the policy's TCTI and
    the swtpm; the enrolment is made before, directly."""
    gate = TpmGate()
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"), gate)
    proxy.start()
    pin_env.write_policy(tcti=proxy.tcti)
    return proxy, gate
