"""A user-space TPM resource manager for tests: tpm2-abrmd on a private D-Bus.

The kernel's resource manager (/dev/tpmrm0, what production uses) needs a kernel TPM,
which a test machine may not have; tpm2-abrmd does the same job in user space in
front of a swtpm: it virtualises handles per connection and flushes everything a
client had loaded when the client's connection goes away. Each instance gets its own
session bus (`dbus-daemon --session`) and bus name; both die with the fixture.
The TCTI for the code under test is `tabrmd:bus_name=...,bus_type=session`, with
`env` (DBUS_SESSION_BUS_ADDRESS) in the client's environment.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import time

_SESSION_CONF = "/usr/share/dbus-1/session.conf"
_ABRMD = "/usr/sbin/tpm2-abrmd"
_START_TIMEOUT_S = 10.0
_names = itertools.count()


class Abrmd:
    def __init__(self, upstream_tcti: str) -> None:
        self.bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={_SESSION_CONF}", "--print-address=1",
             "--nofork", "--nopidfile"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        address = self.bus.stdout.readline().strip()
        self.env = {"DBUS_SESSION_BUS_ADDRESS": address, "PATH": "/usr/bin:/bin",
                    "TSS2_LOG": "all+NONE"}
        name = f"com.intel.tss2.Tabrmd.pypam{os.getpid()}x{next(_names)}"
        self.tcti = f"tabrmd:bus_name={name},bus_type=session"
        self.daemon = subprocess.Popen(
            [_ABRMD, "--session", "--allow-root", f"--dbus-name={name}",
             f"--tcti={upstream_tcti}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self) -> None:
        """Until a client gets through (tpm2_getcap over self.tcti, in self.env)."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        env = {**self.env, "TPM2TOOLS_TCTI": self.tcti}
        while subprocess.run(["tpm2_getcap", "handles-persistent"], env=env, check=False,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             timeout=30).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tpm2-abrmd did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        for proc in (self.daemon, self.bus):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.bus.stdout.close()
