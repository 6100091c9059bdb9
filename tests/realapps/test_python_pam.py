"""python-pam (PyPI `python-pam`, the project's own .venv) as a Python client of the
`login` service (its default), with the PIN in front of Debian's /etc/pam.d/login. It
answers every prompt with the one secret it was given: the PIN prompt and the password
prompt alike. Run as root inside the sandbox (a service checking passwords)."""
from __future__ import annotations

import json
import os
import time

from tests.realapps.harness import ALICE, BOB, LIMIT, WRONG_PIN
from tests.support.pin_env import ROOT

PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
PIN_SHAPED_PASSWORD = "24680"

# One pam.authenticate() per process, timed around the call; one JSON line out.
CLIENT = """
import json, sys, time
import pam
user, secret = sys.stdin.read().split("\\n")[:2]
p = pam.pam()
start = time.monotonic()
ok = p.authenticate(user, secret, service="login")
print(json.dumps({"ok": ok, "code": p.code, "reason": p.reason,
                  "elapsed_s": time.monotonic() - start}))
"""


def authenticate(pin_box, user, secret) -> dict:
    done = pin_box.box.run([PYTHON, "-I", "-c", CLIENT], input=f"{user}\n{secret}\n")
    return json.loads(done.stdout.decode().splitlines()[-1])


def test_python_pam_wrong_pin_never_gets_in(pin_box):
    pin_box.wire("login")
    answer = authenticate(pin_box, ALICE.name, WRONG_PIN)
    assert (answer["ok"], answer["reason"]) == (False, "Authentication failure"), answer
    assert pin_box.failures(ALICE) == 1


def test_python_pam_another_users_pin_never_gets_in(pin_box):
    pin_box.wire("login")
    answer = authenticate(pin_box, ALICE.name, BOB.pin)
    assert answer["ok"] is False, answer
    assert (pin_box.failures(ALICE), pin_box.failures(BOB)) == (1, 0)


def test_python_pam_pin(pin_box, timing_log):
    pin_box.wire("login")
    start = time.monotonic()
    answer = authenticate(pin_box, ALICE.name, ALICE.pin)
    total = time.monotonic() - start
    assert answer["ok"] is True, answer
    assert pin_box.counter(ALICE) == (0, LIMIT)
    timing_log.record_values("python-pam", {
        "authenticate_s": round(answer["elapsed_s"], 4), "total_s": round(total, 4)},
        "pam.authenticate(service='login') as root, direct backend, Debian stack; "
        "total includes starting the Python process in the sandbox")


def test_python_pam_password_spends_nothing(pin_box):
    """A password that cannot be a PIN is refused at the PIN prompt without a TPM
    attempt, then the same secret answers the password prompt."""
    pin_box.wire("login")
    for _ in range(LIMIT + 1):
        assert authenticate(pin_box, ALICE.name, ALICE.password)["ok"] is True
    assert pin_box.counter(ALICE) == (0, LIMIT)


def test_python_pam_pin_shaped_password_one_attempt_per_call(pin_box):
    """What remains (README, threat model): a PIN-shaped password answers the PIN prompt
    too and spends one attempt per call, never more; the password still logs in."""
    pin_box.wire("login")
    pin_box.box.set_password(ALICE.name, PIN_SHAPED_PASSWORD)
    assert authenticate(pin_box, ALICE.name, PIN_SHAPED_PASSWORD)["ok"] is True
    assert pin_box.failures(ALICE) == 1


