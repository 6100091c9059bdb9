"""What a hung TPM costs a login: one bound for the whole login, a few seconds by
default (issue 9, finding 9).

The TPM is swtpm stopped with SIGSTOP (its sockets stay open, nothing answers). The
stacks are the documented shape: tpm_pin `sufficient`, a password module (pam_matrix)
after it, and master_key at the end; the password must still let the user in. Before,
each TPM call had its own `helper_timeout` of 10 s, so such a login took 20 s (status
read and token), and one more `helper_timeout` per extra TPM-using line.

The bounds asserted are generous on purpose (the budget plus SLACK_S for process
starts on a loaded machine); what they catch is a bound per call instead of per login.
"""
from __future__ import annotations

import os

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, prompts, result_name
from tests.support.pin_env import PASSWORD, handle_of
from tests.test_tpm_pin_module import StallingTpmProxy

PIN = "2580"
WRONG = "1111"
DEFAULT_BUDGET_S = 3  # the built-in helper_timeout
SLACK_S = 3.0


@pytest.fixture(params=["direct", "helper"])
def backend(request) -> str:
    return request.param


def master_key_line(pin_env) -> str:
    return f"auth optional {PAM_PYPAM_SO} module=master_key policy={pin_env.policy}"


def hung_login(pin_env, svc: str, answers) -> dict:
    pin_env.swtpm.pause()
    try:
        return pin_env.run(svc, user="root", answers=answers, timeout=120)
    finally:
        pin_env.swtpm.resume()


def test_the_default_bound_is_a_few_seconds_for_the_whole_login(pin_env, backend):
    pin_env.enrol("root", PIN)
    pin_env.write_policy(helper_timeout=None)  # the built-in default
    svc = pin_env.service("login",
                          pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                          pin_env.matrix_line(), master_key_line(pin_env))
    pin_env.set_password("root", svc)
    report = hung_login(pin_env, svc, [PASSWORD])
    assert result_name(report, "auth") == "PAM_SUCCESS"  # the password still decides
    assert prompts(report) == ["Password: "]  # no PIN prompt: the status read hung
    assert report["elapsed"] <= DEFAULT_BUDGET_S + SLACK_S, report["elapsed"]
    assert report["stdout"] == "" and report["stderr"] == ""


def test_every_tpm_line_of_a_login_shares_one_bound(pin_env, backend):
    """Three TPM-using lines (tpm_pin twice, as a stack with a retry might, and
    master_key) with a 3 s budget: 3 s in all, not 9 s."""
    budget = 3
    pin_env.enrol("root", PIN)
    pin_env.write_policy(helper_timeout=budget)
    pin_line = pin_env.tpm_pin_line(backend=backend, control="optional")
    svc = pin_env.service("login", pin_line, pin_line, pin_env.matrix_line(),
                          master_key_line(pin_env))
    pin_env.set_password("root", svc)
    report = hung_login(pin_env, svc, [PASSWORD])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert report["elapsed"] <= budget + SLACK_S, report["elapsed"]
    assert report["elapsed"] >= budget * 0.9  # it did wait for the TPM, once
    assert pin_env.counter("root") == (0, 3)  # no attempt was spent


def test_the_bound_holds_when_the_tpm_hangs_after_the_prompt(pin_env, backend):
    """The TPM answers the status read, the user types a (wrong) PIN, the TPM executes
    the check but its answer never comes: the check and master_key share what is left
    of the budget, and the PIN is counted once, never resent."""
    budget = 3
    pin_env.enrol("root", PIN)
    proxy = StallingTpmProxy(pin_env.swtpm, os.path.join(pin_env.dir, "proxy"),
                             handle_of("root"), deliver=True)
    try:
        pin_env.write_policy(tcti=proxy.tcti, helper_timeout=budget)
        svc = pin_env.service("login",
                              pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                              pin_env.matrix_line(), master_key_line(pin_env))
        pin_env.set_password("root", svc)
        report = pin_env.run(svc, user="root", answers=[WRONG, PASSWORD], timeout=120)
        assert proxy.stalled.is_set()
    finally:
        proxy.close()
    assert result_name(report, "auth") == "PAM_SUCCESS"  # by the password
    assert prompts(report) == ["PIN: ", "Password: "]
    assert report["elapsed"] <= budget + SLACK_S, report["elapsed"]
    assert pin_env.counter("root") == (1, 3)
