"""A TPM Clear voids every enrolment, whatever root records afterwards (review 3, R5).

A Clear (the platform hierarchy, the firmware's "Clear TPM" menu, the lockout password)
deletes every PIN index and changes the owner seed, so the salt key's Name changes and
salted checks refuse to send a PIN. The owner password is empty again after it, so
whoever cleared the TPM can define an index with a PIN of their own at an enrolled
user's handle. When root then does what the refusal says (`pinutil salt-key record`),
the old enrolment record must not make that planted index the user's PIN: each record
names the salt key it was made under (pinutil/pin/enrolment.py), and a login refuses
a record made under another one. tpm2-tools clears the TPM, so the Clear is not our
code's idea of one.
"""
from __future__ import annotations

import json
import os

import pytest

from pinutil.pin import enrolment
from tests.support.pamhost import PAM_SUCCESS, result_code
from tests.support.pin_env import handle_of, uid_of, write_file

PIN, PLANTED, AGAIN = "2580", "9999", "1470"


def clear_and_plant(pin_env) -> None:
    """What an attacker with the platform hierarchy (empty platform auth, as on swtpm
    and on firmware that leaves it open) does: Clear, then an index of their own, with
    our attributes and their PIN, at root's handle (the owner password is empty now)."""
    pin_env.swtpm.tools("tpm2_clear", "-c", "p")
    from pinutil.pin.index import PinIndex
    from pinutil.tpm.context import Tpm

    with Tpm(pin_env.swtpm.tcti) as tpm:
        PinIndex(tpm, handle_of("root")).define(PLANTED.encode(), 3, salted=False)


def login(pin_env, syslog_capture, backend: str, typed: str):
    service = pin_env.service("r5", pin_env.tpm_pin_line(backend=backend))
    return syslog_capture.run_pam(pin_env.pamd, service, user="root", answers=[typed])


@pytest.mark.parametrize("backend", ["direct", "helper", "daemon"])
def test_rerecording_the_salt_key_after_a_clear_never_adopts_a_planted_index(
        pin_env, syslog_capture, backend, request):
    if backend == "daemon":
        request.getfixturevalue("pinutild_policy")
    pin_env.enrol("root", PIN)
    assert result_code(login(pin_env, syslog_capture, backend, PIN), "auth") == PAM_SUCCESS
    clear_and_plant(pin_env)
    # Root does what the refusal says, and is told what it means.
    done = pin_env.pinutil("salt-key", "record")
    assert done.returncode == 0, done.stderr
    assert b"enrol again" in done.stdout, done.stdout
    report = login(pin_env, syslog_capture, backend, PLANTED)
    assert result_code(report, "auth") != PAM_SUCCESS, \
        "an index planted after a TPM clear logs in once root re-records the salt key"
    assert any("cleared or replaced" in m for m in syslog_capture.messages()), \
        syslog_capture.messages()
    assert pin_env.swtpm.read_pin_counter(handle_of("root"))[0] == 0  # nothing was sent
    # The way back: root deletes what is at the handle, the user enrols again.
    assert pin_env.pinutil("delete", "--yes", "root").returncode == 0
    pin_env.enrol("root", AGAIN)
    assert result_code(login(pin_env, syslog_capture, backend, AGAIN), "auth") == PAM_SUCCESS


def test_status_says_the_enrolment_is_void_after_a_clear(pin_env):
    pin_env.enrol("root", PIN)
    clear_and_plant(pin_env)
    assert pin_env.pinutil("salt-key", "record").returncode == 0
    done = pin_env.pinutil("--json", "status", "root")
    fields = json.loads(done.stdout)
    assert fields["record"] == "mismatch" and "enrolled again" in fields["record_problem"]


def test_an_older_record_is_bound_by_the_rerecord_and_refused_after_a_clear(
        pin_env, syslog_capture):
    """A record written before records named their salt key (no `salt_key=` line):
    `salt-key record` first binds it to the Name recorded until then."""
    pin_env.enrol("root", PIN)
    path = os.path.join(pin_env.enrolment_dir, str(uid_of("root")))
    with open(path) as f:
        write_file(path, "".join(line for line in f if not line.startswith("salt_key=")), 0o640)
    assert enrolment.read(pin_env.enrolment_dir, 0).salt_key is None
    assert result_code(login(pin_env, syslog_capture, "direct", PIN), "auth") == PAM_SUCCESS
    clear_and_plant(pin_env)
    assert pin_env.pinutil("salt-key", "record").returncode == 0
    report = login(pin_env, syslog_capture, "direct", PLANTED)
    assert result_code(report, "auth") != PAM_SUCCESS


def test_migrate_state_binds_older_records_to_the_recorded_key(pin_env):
    pin_env.enrol("root", PIN)
    bound = enrolment.read(pin_env.enrolment_dir, 0)
    assert bound.salt_key is not None
    enrolment.write(pin_env.enrolment_dir, bound.replace(salt_key=None), as_root=True)
    done = pin_env.pinutil("--json", "migrate-state")
    assert done.returncode == 0, done.stderr
    assert enrolment.read(pin_env.enrolment_dir, 0) == bound
