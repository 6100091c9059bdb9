"""tpm_pin and clients that answer every prompt with one secret (issue 9, finding 7).

python-pam, sshd's PasswordAuthentication and `sudo -S` answer every prompt with the
same password; a PIN-shaped password then spends a TPM attempt on every login, and
sudo retries `pam_authenticate` on one handle up to three times. Two rules hold:

- a remote login (PAM_RHOST set to anything, loopback included: review F12) gets no
  PIN prompt and PAM_AUTHINFO_UNAVAIL unless the pam.d line says `allow_remote`;
- at most one PIN goes to the TPM per PAM handle: pamhost's `--stages auth,auth,auth`
  calls pam_authenticate three times on one handle, exactly as sudo does.

Real libpam (build/pamhost), a real swtpm; the TPM's counter is read out of band.
"""
from __future__ import annotations

import pytest

from tests.support.pamhost import prompts, result_name
from tests.support.pin_env import PASSWORD

PIN = "2580"
WRONG = "1111"
LIMIT = 3
BACKENDS = ("direct", "helper")

#: No PAM_RHOST (None: the item is never set) or an empty one: a console, su, sudo.
LOCAL_RHOSTS = (None, "")
#: Loopback is remote too: any local user (or a port forward) makes that connection,
#: and the root service behind it authenticates the account they name.
LOOPBACK_RHOSTS = ("localhost", "127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1")
REMOTE_RHOSTS = ("203.0.113.7", "192.168.1.20", "2001:db8::1", "example.org",
                 "localhost.example.org", "127.0.0.1.example.org", "0.0.0.0", "::",
                 *LOOPBACK_RHOSTS)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


def stage_names(report) -> list[str]:
    return [s["name"] for s in report["stages"]]


def run(env, service, answers, **kw):
    report = env.run(service, user="root", answers=answers, **kw)
    assert report["exit_status"] == 0 and report["stderr"] == "", report["stderr"]
    return report


# ---- remote logins -------------------------------------------------------------------------
@pytest.mark.parametrize("rhost", REMOTE_RHOSTS)
def test_remote_login_gets_no_pin_prompt(pin_env, backend, rhost, syslog_capture):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sshd", pin_env.tpm_pin_line(backend=backend))
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root", answers=[PIN],
                                    items={"rhost": rhost})
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # not even a message
    assert pin_env.counter("root") == (0, LIMIT)
    assert any("remote" in m and "allow_remote" in m for m in syslog_capture.messages())


def test_remote_password_login_spends_no_attempt(pin_env, backend):
    """sshd PasswordAuthentication: the one password answers the PIN prompt too."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sshd", pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                          pin_env.matrix_line("required"))
    pin_env.set_password("root", "sshd", password=WRONG)  # a PIN-shaped password
    for _ in range(LIMIT + 1):
        report = run(pin_env, svc, [WRONG, WRONG], items={"rhost": "203.0.113.7"})
        assert result_name(report, "auth") == "PAM_SUCCESS"
        assert prompts(report) == ["Password: "]
    assert pin_env.counter("root") == (0, LIMIT)


@pytest.mark.parametrize("rhost", LOCAL_RHOSTS)
def test_local_login_is_prompted(pin_env, backend, rhost):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend))
    report = run(pin_env, svc, [PIN], items={} if rhost is None else {"rhost": rhost})
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: "]


@pytest.mark.parametrize("rhost", ["203.0.113.7", "127.0.0.1", "::1"])
def test_allow_remote_prompts_remote_logins(pin_env, backend, rhost):
    """The one opt-in, for remote and loopback alike (no separate allow_loopback)."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sshd", pin_env.tpm_pin_line("allow_remote", backend=backend))
    report = run(pin_env, svc, [PIN], items={"rhost": rhost})
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: "]


# ---- one attempt per handle ----------------------------------------------------------------
def test_sudo_like_retries_spend_one_attempt(pin_env, backend, syslog_capture):
    """Three pam_authenticate calls on one handle (sudo's passwd_tries): one PIN."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sudo", pin_env.tpm_pin_line(backend=backend))
    report = syslog_capture.run_pam(pin_env.pamd, svc, user="root",
                                    answers=[WRONG, WRONG, WRONG],
                                    stages=("auth", "auth", "auth"))
    assert stage_names(report) == ["PAM_AUTH_ERR", "PAM_AUTHINFO_UNAVAIL",
                                   "PAM_AUTHINFO_UNAVAIL"]
    assert prompts(report) == ["PIN: "]
    assert pin_env.counter("root") == (1, LIMIT)
    assert any("one PIN attempt per PAM transaction" in m for m in syslog_capture.messages())


def test_retry_after_a_wrong_pin_falls_back_to_the_password(pin_env, backend):
    """sudo with PIN-or-password: the retries ask for the password only."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sudo", pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                          pin_env.matrix_line("required"))
    pin_env.set_password("root", "sudo")
    report = run(pin_env, svc, [WRONG, "not the password", PIN, PASSWORD],
                 stages=("auth", "auth", "auth"))
    assert stage_names(report) == ["PAM_AUTH_ERR", "PAM_AUTH_ERR", "PAM_SUCCESS"]
    # The right PIN typed at the password prompt is only a wrong password.
    assert prompts(report) == ["PIN: ", "Password: ", "Password: ", "Password: "]
    assert pin_env.counter("root") == (1, LIMIT)


def test_a_new_handle_gets_a_new_attempt(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend))
    assert result_name(run(pin_env, svc, [WRONG]), "auth") == "PAM_AUTH_ERR"
    report = run(pin_env, svc, [PIN])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, LIMIT)


def test_an_invalid_pin_spends_no_attempt_and_keeps_the_try(pin_env, backend):
    """A policy-breaking answer never reached the TPM: the handle may still try once."""
    pin_env.enrol("root", PIN)
    svc = pin_env.service("sudo", pin_env.tpm_pin_line(backend=backend))
    report = run(pin_env, svc, ["12", PIN], stages=("auth", "auth"))
    assert stage_names(report) == ["PAM_AUTH_ERR", "PAM_SUCCESS"]
    assert pin_env.counter("root") == (0, LIMIT)
