"""A PIN login leaves the host's environment exactly as it was, and libtss2 never
writes to the host's fds 0-2 (issue 9, finding 8, first half).

The module used to set TSS2_LOG and remove TSS2_LOGFILE in the host's own environment
(from a worker thread, racing the host's getenv; inherited by everything the host ran
afterwards). Now the TPM is opened only in a forked child, so only the child's copy of
the environment changes, and the child's fds 0-2 are /dev/null. build/pamhost reports
its environ (in order, every byte) before and after the transaction.
"""
from __future__ import annotations

import os

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, result_name

PIN = "2580"


@pytest.fixture(params=["direct", "helper"])
def backend(request) -> str:
    return request.param


def master_key_line(pin_env) -> str:
    return f"auth optional {PAM_PYPAM_SO} module=master_key policy={pin_env.policy}"


def test_a_pin_login_leaves_the_host_environment_byte_identical(pin_env, backend):
    pin_env.enrol("root", PIN)
    tss_log = os.path.join(pin_env.dir, "tss.log")
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend),
                          master_key_line(pin_env))
    env = {"TSS2_LOGFILE": tss_log, "PYPAM_CANARY": "caf\u00e9 = \u2603"}
    report = pin_env.run(svc, user="root", answers=[PIN], env=env,
                         extra_args=["--report-environ"])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    before, after = report["environ_before"], report["environ_after"]
    assert f"TSS2_LOGFILE={tss_log}" in before
    assert after == before
    assert not any(entry.startswith("TSS2_LOG=") for entry in after)
    assert not os.path.exists(tss_log)


@pytest.mark.parametrize("tpm", ["working", "absent"])
def test_libtss2_writes_nothing_to_fds_0_2_even_when_asked_to_trace(pin_env, backend, tpm):
    """A regression guard rather than a new hole: the host asks libtss2 for its most
    verbose logging on stderr, and the TPM is either working or absent (libtss2 then
    logs errors at its default level)."""
    pin_env.enrol("root", PIN)
    if tpm == "absent":
        pin_env.write_policy(tcti=f"swtpm:path={pin_env.dir}/no-such-tpm")
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend),
                          master_key_line(pin_env))
    report = pin_env.run(svc, user="root", answers=[PIN], env={"TSS2_LOG": "all+trace"})
    expected = "PAM_SUCCESS" if tpm == "working" else "PAM_AUTHINFO_UNAVAIL"
    assert result_name(report, "auth") == expected
    assert report["stdout"] == "" and report["stderr"] == ""
