"""A user's request never makes pinutild look up a name that user may not use: with a
slow directory (sssd/LDAP timing out) the TPM worker would spend that time on the TPM's
clock, trip the breaker at --tpm-timeout (3 s), and every queued login would get
`tpm_unavailable` (review 2, G7). The slow directory is simulated by patching
pwd.getpwnam in the service process for one name (5 s, then "no account"). Fails on the
code before: root's concurrent pin-status got tpm_unavailable.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from pinutil.service import protocol
from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import PYTHON, ROOT, Pinutild

SLOW_NAME = "slow-directory-user"
_SERVICE = """
import pwd, sys, time
real = pwd.getpwnam
def getpwnam(name):
    if name == SLOW_NAME:
        time.sleep(5)  # a directory timing out
        raise KeyError(name)
    return real(name)
pwd.getpwnam = getpwnam
from pinutil.service import __main__ as service
sys.exit(service.main(sys.argv[1:]))
""".replace("SLOW_NAME", repr(SLOW_NAME))

# As nobody: one request (argv[4]: pin-status or pin-check) for SLOW_NAME; prints the reply.
_ASKER = """
import socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
request = {"verb": sys.argv[4], "user": sys.argv[3]}
if sys.argv[4] == "pin-check":
    request["pin"] = b"1234"
s.sendall(protocol.encode(request))
s.settimeout(30)
print(protocol.decode_frame(s.recv(4096))["result"])
"""


def _reply(sock: socket.socket) -> dict:
    sock.settimeout(30)
    header = sock.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
    return protocol.decode_body(sock.recv(protocol.body_length(header), socket.MSG_WAITALL))


@pytest.mark.parametrize("verb", ["pin-status", "pin-check"])
def test_another_users_name_is_never_looked_up(pin_env, verb):
    pin_env.enrol("root", "2580")
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "slow.sock"))
    service.argv = [PYTHON, "-c", _SERVICE, *service.argv[3:]]
    service.start()
    try:
        asker = subprocess.Popen([*AS_NOBODY, PYTHON, "-c", _ASKER, service.socket, ROOT,
                                  SLOW_NAME, verb], stdout=subprocess.PIPE, text=True,
                                 cwd="/")
        time.sleep(0.5)  # nobody's request is with the worker, or already answered
        root = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with root:
            root.connect(service.socket)
            root.sendall(protocol.encode({"verb": "pin-status", "user": "root"}))
            assert _reply(root)["result"] == "success"
        assert asker.communicate(timeout=60)[0].strip() == "permission_denied"
    finally:
        service.stop()
