"""A login-like host that forks and execs the user's session after a hung TPM must not
hand that session a TPM connection (issue 9, finding 3).

tcti-swtpm and tcti-device open their fds without O_CLOEXEC, and the old worker thread,
abandoned on a hung TPM, kept its connection open inside the host: the session the
host then exec'd inherited a raw connection to the TPM (with the owner's empty
password, enough to define root's PIN index). Now the TPM is only ever opened in a
short-lived forked child that is killed at the deadline. The session here is a small
Python program exec'd by build/pamhost (`--exec-after`, before pam_end, as login and
sshd do) that lists its own /proc/self/fd.
"""
from __future__ import annotations

import json
import os
import shlex

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, result_name
from tests.support.pin_env import handle_of
from tests.test_tpm_pin_module import StallingTpmProxy

PIN = "2580"
BUDGET_S = 1  # helper_timeout: the login's TPM time

FD_LISTER = (
    "import json, os, sys\n"
    "fds = {}\n"
    "for n in os.listdir('/proc/self/fd'):\n"
    "    try:\n"
    "        fds[n] = os.readlink('/proc/self/fd/' + n)\n"
    "    except OSError:\n"
    "        pass\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump(fds, f)\n"
)


def session_fds(pin_env, service: str, answers=()) -> tuple[dict, dict]:
    """Run a login on `service`, then fork+exec the lister; (report, its fds)."""
    out = os.path.join(pin_env.dir, "session-fds.json")
    command = f"exec /usr/bin/python3 -I -c {shlex.quote(FD_LISTER)} {shlex.quote(out)}"
    report = pin_env.run(service, user="root", answers=answers, timeout=60,
                         extra_args=["--exec-after", command])
    assert report["exec_after_exit"] == 0  # the session really ran
    with open(out) as f:
        return report, json.load(f)


def tpm_fds(fds: dict) -> dict:
    """Sockets (the TPM's transport here; pamhost holds none a child inherits) and TPM
    device nodes."""
    return {n: t for n, t in fds.items() if t.startswith(("socket:", "/dev/tpm"))}


def master_key_line(pin_env) -> str:
    return f"auth optional {PAM_PYPAM_SO} module=master_key policy={pin_env.policy}"


def test_no_tpm_fd_reaches_the_session_after_a_hung_status_read(pin_env):
    pin_env.enrol("root", PIN)
    pin_env.write_policy(helper_timeout=BUDGET_S)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="direct"),
                          master_key_line(pin_env))
    pin_env.swtpm.pause()
    try:
        report, fds = session_fds(pin_env, svc, [PIN])
    finally:
        pin_env.swtpm.resume()
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # it hung before the prompt
    assert tpm_fds(fds) == {}, fds


def test_no_tpm_fd_reaches_the_session_after_a_hung_pin_check(pin_env):
    pin_env.enrol("root", PIN)
    proxy = StallingTpmProxy(pin_env.swtpm, os.path.join(pin_env.dir, "proxy"),
                             handle_of("root"), deliver=False)
    try:
        pin_env.write_policy(tcti=proxy.tcti, helper_timeout=BUDGET_S)
        svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="direct"))
        report, fds = session_fds(pin_env, svc, [PIN])
        assert proxy.stalled.is_set()  # the hang really was in the PIN check
    finally:
        proxy.close()
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert tpm_fds(fds) == {}, fds


@pytest.mark.parametrize("hung", [False, True], ids=["answering", "hung"])
def test_no_tpm_fd_reaches_the_session_from_master_key(pin_env, hung):
    pin_env.write_policy(helper_timeout=BUDGET_S)
    svc = pin_env.service("mk", master_key_line(pin_env),
                          "auth required pam_permit.so")
    if hung:
        pin_env.swtpm.pause()
    try:
        report, fds = session_fds(pin_env, svc)
    finally:
        pin_env.swtpm.resume()
    assert result_name(report, "auth") == "PAM_SUCCESS"  # master_key never decides
    assert tpm_fds(fds) == {}, fds
