"""Every PIN pinutild does not accept is one LOG_AUTHPRIV line naming the caller and the
account, never the PIN (review 2 G4): code running as a user may speak the protocol
itself (no PAM host, so no pam_syslog line) and guess the user's PIN, limit-1 times
after each of the user's own logins; the service is the one place that sees it.
pinutild runs in syslog_capture's namespace (its /dev/log is the test's). Fails on the
code before: two wrong pin-checks left no line."""
from __future__ import annotations

import os

from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import Pinutild
from tests.support.syslog_capture import AUTHPRIV

PIN, WRONG = "2580", "1111"
WARNING = (AUTHPRIV, 4)


def _lines(syslog_capture) -> list:
    syslog_capture.sync()
    return [((line.facility, line.severity), line.message) for line in syslog_capture.lines()
            if line.ident == "pinutil"]


def test_wrong_pins_over_the_protocol_are_logged_without_the_pin(pin_env, syslog_capture):
    pin_env.enrol("nobody", PIN)
    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "log.sock"))
    service.argv = syslog_capture.wrap(service.argv)
    service.start()
    try:
        syslog_capture.clear()
        for _ in range(2):
            reply = service.ask(as_user=AS_NOBODY, verb="pin-check", user="nobody",
                                pin=WRONG.encode())
            assert reply["result"] == "wrong_pin", reply
        refused = service.ask(as_user=AS_NOBODY, verb="pin-check", user="root",
                              pin=WRONG.encode())
        assert refused["result"] == "permission_denied", refused
        right = service.ask(as_user=AS_NOBODY, verb="pin-check", user="nobody",
                            pin=PIN.encode())
        assert right["result"] == "success", right
        lines = _lines(syslog_capture)
    finally:
        service.stop()
    wrong = (WARNING, "check by nobody (uid 65534) for nobody (uid 65534): wrong_pin")
    assert lines.count(wrong) == 2, lines
    assert (WARNING, "check by nobody (uid 65534) for 'root': permission_denied") in lines
    assert len(lines) == 3, lines  # a right PIN is not logged here (the PAM host does)
    assert not any(WRONG in text or PIN in text for _, text in lines), lines
