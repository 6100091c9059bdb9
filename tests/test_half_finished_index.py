"""A half-finished enrolment (issue 9, finding 6): a `pinutil setup` killed between
NV_DefineSpace and the one NV_Write leaves an index that holds no PIN. Its owner may
replace it with setup or delete it without a PIN, and setup, delete, change, test and
status all say the same thing about it.

The index is made the way a killed setup leaves it: defined with pinpam's layout and
never written (tpm2-tools). The caller is a test user that exists only in a private
mount namespace, running the set-gid-tss launcher copy (tests/support/accounts.py);
setup proves their password through the real pam_unix.
"""
from __future__ import annotations

import pytest

from pinutil.pin.index import HALF_FINISHED_TEXT
from tests.support.accounts import setgid_tss_launcher
from tests.test_enrolment_proof import (
    HANDLE,
    LIMIT,
    PASSWORD,
    PIN,
    UID,
    USER,
    answer,
    pinutil,
)
from tests.test_pin_index import _define_like_pinpam


@pytest.fixture
def half_env(pin_env, accounts):
    accounts.add_user(USER, UID, PASSWORD)
    pin_env.launcher = setgid_tss_launcher(pin_env)
    _define_like_pinpam(pin_env.swtpm, HANDLE, b"0000", LIMIT, write=False)
    assert HANDLE in pin_env.enrolled_handles()
    return pin_env, accounts


def test_owner_setup_replaces_it(half_env, syslog_capture):
    env, accounts = half_env
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=f"{PASSWORD}\n{PIN}\n")
    assert done.returncode == 0, done.stderr
    assert answer(done)["replaced_half_finished"] is True
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
    assert pinutil(env, accounts, syslog_capture, "test", stdin=f"{PIN}\n").returncode == 0


def test_owner_setup_still_needs_the_password(half_env, syslog_capture):
    env, accounts = half_env
    done = pinutil(env, accounts, syslog_capture, "setup", stdin=f"{PIN}\n{PIN}\n")
    assert done.returncode == 7 and answer(done)["result"] == "wrong_password"
    assert HANDLE in env.enrolled_handles()  # left as it was


def test_owner_deletes_it_without_a_pin(half_env, syslog_capture):
    env, accounts = half_env
    done = pinutil(env, accounts, syslog_capture, "delete", stdin="")
    assert done.returncode == 0, done.stderr
    assert HANDLE not in env.enrolled_handles()


def test_root_setup_replaces_it(half_env, syslog_capture):
    env, accounts = half_env
    done = pinutil(env, accounts, syslog_capture, "setup", USER, stdin=f"{PIN}\n", as_root=True)
    assert done.returncode == 0, done.stderr
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)


def test_every_command_says_the_same(half_env, syslog_capture):
    env, accounts = half_env
    status = answer(pinutil(env, accounts, syslog_capture, "status"))
    assert status["enrolled"] is False and status["half_finished"] is True
    assert HALF_FINISHED_TEXT in status["detail"]
    for command, stdin in (("change", f"{PIN}\n{PIN}\n"), ("test", f"{PIN}\n")):
        done = pinutil(env, accounts, syslog_capture, command, stdin=stdin)
        assert done.returncode == 9, (command, done.stderr)
        assert answer(done)["result"] == "not_enrolled"
        assert HALF_FINISHED_TEXT in answer(done)["error"], command
    assert HANDLE in env.enrolled_handles()


def test_a_written_pin_still_needs_the_pin_to_delete(half_env, syslog_capture):
    env, accounts = half_env
    assert pinutil(env, accounts, syslog_capture, "setup",
                   stdin=f"{PASSWORD}\n{PIN}\n").returncode == 0
    done = pinutil(env, accounts, syslog_capture, "delete", stdin="")
    assert done.returncode == 5  # no PIN given: cancelled
    done = pinutil(env, accounts, syslog_capture, "delete", stdin="0000\n")
    assert done.returncode == 7
    assert env.swtpm.read_pin_counter(HANDLE) == (1, LIMIT)
