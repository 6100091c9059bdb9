"""pinutild started by Debian's systemd-socket-activate (package systemd): it takes the
listening socket from LISTEN_FDS/LISTEN_PID, serves, and exits when idle; without
either `--listen` or a socket from systemd it refuses to start."""
from __future__ import annotations

import os
import subprocess

from pinutil.service import client
from tests.support.pinutild import PYTHON, ROOT, wait_for_listener

PIN = "1234"


def test_socket_activated_service_serves_then_exits_when_idle(pin_env):
    pin_env.enrol("root", PIN)
    path = os.path.join(pin_env.dir, "activated.sock")
    activator = subprocess.Popen(
        ["systemd-socket-activate", "-l", path, "--",
         PYTHON, "-m", "pinutil.service", "--policy", pin_env.policy, "--idle-exit", "1"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        wait_for_listener(path, activator)  # the activator's socket (a probe starts it)

        reply = client.call(path, {"verb": "pin-check", "user": "root", "pin": PIN.encode()}, 30)
        assert reply == {"result": "success"}
        # systemd-socket-activate exec()s the service in its own process: that process
        # leaves by itself, cleanly, once idle.
        assert activator.wait(timeout=60) == 0, activator.stderr.read()
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait()


def test_refuses_to_start_without_a_socket(pin_env):
    done = subprocess.run([PYTHON, "-m", "pinutil.service", "--policy", pin_env.policy],
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode != 0 and "--listen PATH is required" in done.stderr


def test_listen_fds_meant_for_another_process_are_ignored(pin_env):
    done = subprocess.run([PYTHON, "-m", "pinutil.service", "--policy", pin_env.policy],
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "LISTEN_PID": "1",
                                         "LISTEN_FDS": "1"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "--listen PATH is required" in done.stderr
