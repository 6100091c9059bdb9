"""A service that closes a connection before reading it (what pinutild does beyond its
caps, and on a restart) must give a C PAM host PAM_AUTHINFO_UNAVAIL, never SIGPIPE: the
host's SIGPIPE is at its default (build/pamhost, like login and su), and the client
sends with MSG_NOSIGNAL. Fails on the code before: the first test in most runs (a
race with the close), the second always (the service has shut its reading side before
it sends the PIN prompt, so the answer's send is EPIPE every time)."""
from __future__ import annotations

import os
import subprocess
import sys

import pinutil
from tests.support.pamhost import result_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pinutil.__file__)))

_CLOSER = """
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""

# A service that reads the request, stops reading (shutdown SHUT_RD: any later send
# from the client is EPIPE), then asks for the PIN and waits until the client is gone.
_DEAF = """
import os, socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    header = c.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
    c.recv(protocol.body_length(header), socket.MSG_WAITALL)
    c.shutdown(socket.SHUT_RD)
    c.sendall(protocol.encode({"prompt": "PIN: ", "style": "echo_off"}))
    c.recv(1)
    c.close()
"""


def _serve(pin_env, script: str, *args: str) -> subprocess.Popen:
    path = os.path.join(pin_env.dir, "closer.sock")
    server = subprocess.Popen([sys.executable, "-I", "-c", script, path, *args],
                              stdout=subprocess.PIPE, text=True, cwd="/")
    assert server.stdout.readline() == "ready\n"
    pin_env.policy_extra["service_socket"] = path
    pin_env.write_policy()
    return server


def test_an_answer_the_service_no_longer_reads_is_unavailable_not_a_signal(pin_env):
    pin_env.enrol("root", "2580")
    server = _serve(pin_env, _DEAF, ROOT)
    try:
        svc = pin_env.service("deaf", pin_env.tpm_pin_line(backend="daemon"))
        report = pin_env.run(svc, user="root", answers=["2580"], check=False)
        assert report.get("exit_status") == 0, report.get("exit_status")
        assert report["conv_calls"] == 1  # the prompt was shown: its answer was sent
        assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
        assert pin_env.counter("root") == (0, 3)
    finally:
        server.kill()
        server.wait()


def test_a_closed_connection_is_unavailable_not_a_signal(pin_env):
    pin_env.enrol("root", "2580")
    closer = _serve(pin_env, _CLOSER)
    try:
        svc = pin_env.service("closed", pin_env.tpm_pin_line(backend="daemon"))
        for _ in range(20):
            report = pin_env.run(svc, user="root", answers=["2580"], check=False)
            assert report.get("exit_status") == 0, report.get("exit_status")
            assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
        assert pin_env.counter("root") == (0, 3)
    finally:
        closer.kill()
        closer.wait()
