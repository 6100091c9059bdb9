"""An exception while pinutild handles one connection ends that connection only: the
service stays up and the next client is served. The fault is injected into a real
service process (its request parser raises for the user "boom"), as a bug would."""
from __future__ import annotations

import os

from pinutil.service import client
from tests.support.pinutild import PYTHON, Pinutild

PIN = "1234"

# pinutild's own main, with a request parser that raises for one user (the fault).
_FAULTY_SERVICE = """
import sys
from pinutil.service import __main__ as service, verbs

parse = verbs.parse_request

def parse_request(fields):
    if fields.get("user") == "boom":
        raise RuntimeError("injected fault")
    return parse(fields)

verbs.parse_request = parse_request
sys.exit(service.main(sys.argv[1:]))
"""


def test_an_exception_on_one_connection_does_not_end_the_service(pin_env):
    pin_env.enrol("root", PIN)
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "faulty.sock"))
    service.argv = [PYTHON, "-c", _FAULTY_SERVICE, *service.argv[3:]]
    service.start()
    try:
        for _ in range(3):
            reply = service.ask(verb="pin-check", user="boom", pin=b"9999")
            # No answer at all (EOF), which the client takes as "unavailable".
            assert reply["raised"].startswith("TpmUnavailable: "), reply
            assert service.alive()
        assert client.call(service.socket, {"verb": "pin-check", "user": "root",
                                            "pin": PIN.encode()}, 30) == {"result": "success"}
        assert "RuntimeError: injected fault" in service.output()  # logged, not hidden
        assert pin_env.counter("root") == (0, 3)
    finally:
        service.stop()
