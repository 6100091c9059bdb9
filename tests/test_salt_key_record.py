"""The salt key record (pinutil/pin/salt_key.py): who writes it, what a check does with it.

tpm2-tools is the oracle for the Name: `tpm2_readpublic` computes it without our code.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.accounts import AS_NOBODY
from tests.support.pamhost import PAM_AUTHINFO_UNAVAIL, PAM_SUCCESS, result_code
from tests.support.pin_env import PINUTIL, write_file

PIN = "2580"
SALT_KEY_HANDLE = "0x81000082"


def record_of(env) -> str:
    return os.path.join(env.dir, "salt_key")


def tpm_name(env) -> str:
    """The Name of the persistent salt key, as tpm2-tools computes it."""
    out = env.swtpm.tools("tpm2_readpublic", "-c", SALT_KEY_HANDLE).stdout.decode()
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("name:"))


def login(env, syslog_capture, backend, typed=PIN):
    service = env.service("pin", env.tpm_pin_line(backend=backend))
    return syslog_capture.run_pam(env.pamd, service, user="root", answers=[typed])


def test_roots_first_setup_records_the_tpms_key(pin_env):
    os.unlink(record_of(pin_env))
    pin_env.enrol("root", PIN)
    with open(record_of(pin_env)) as f:
        assert f.read() == tpm_name(pin_env) + "\n"
    st = os.stat(record_of(pin_env))
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o644)


def test_record_and_show_commands(pin_env):
    os.unlink(record_of(pin_env))
    done = pin_env.pinutil("--json", "salt-key", "show")
    assert done.returncode == 0 and json.loads(done.stdout)["matches"] is False
    done = pin_env.pinutil("--json", "salt-key", "record")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == tpm_name(pin_env)
    done = pin_env.pinutil("--json", "salt-key", "show")
    assert json.loads(done.stdout)["matches"] is True


def test_only_root_records_it(pin_env):
    done = subprocess.run([*AS_NOBODY, PINUTIL, "salt-key", "record"], capture_output=True, env={},
                          check=False, timeout=60)
    assert done.returncode == 6 and b"only root" in done.stderr


@pytest.mark.parametrize("backend", ["direct", "helper"])
@pytest.mark.parametrize("damage", ["missing", "other-key", "not-root", "symlink", "garbage"])
def test_a_check_without_the_right_record_fails_closed(pin_env, syslog_capture, backend,
                                                       damage):
    pin_env.enrol("root", PIN)
    assert result_code(login(pin_env, syslog_capture, backend), "auth") == PAM_SUCCESS
    path = record_of(pin_env)
    if damage == "missing":
        os.unlink(path)
    elif damage == "other-key":
        write_file(path, "000b" + "11" * 32 + "\n")
    elif damage == "not-root":
        os.chown(path, 65534, 65534)
    elif damage == "symlink":
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
    else:
        write_file(path, "not a name\n")
    report = login(pin_env, syslog_capture, backend)
    assert result_code(report, "auth") == PAM_AUTHINFO_UNAVAIL
    expected = {"missing": "no salt key is recorded", "other-key": "not the recorded one",
                "not-root": "owned by root or pinutild", "symlink": "symbolic link",
                "garbage": "does not hold"}[damage]
    assert any(expected in m for m in syslog_capture.messages()), syslog_capture.messages()
    assert pin_env.counter("root") == (0, 3)  # no PIN was sent
    # root records the key again: logins work again
    if damage == "symlink":
        os.unlink(path)
    assert pin_env.pinutil("salt-key", "record").returncode == 0
    assert result_code(login(pin_env, syslog_capture, backend), "auth") == PAM_SUCCESS


@pytest.mark.parametrize("damage", ["missing", "other-key"])
def test_roots_change_without_the_right_record_keeps_the_old_pin(pin_env, syslog_capture,
                                                                 damage):
    """change deletes the old index before it defines the new one: a salt key that
    define() would refuse must be refused before the delete, or the user loses the PIN."""
    pin_env.enrol("root", PIN)
    path = record_of(pin_env)
    if damage == "missing":
        os.unlink(path)
    else:
        write_file(path, "000b" + "11" * 32 + "\n")
    done = pin_env.pinutil("--json", "--stdin", "change", "root", stdin="1470\n")
    assert done.returncode != 0, done.stdout
    assert pin_env.counter("root") == (0, 3)  # the old index is still there
    # root records the key again: the old PIN logs in
    assert pin_env.pinutil("salt-key", "record").returncode == 0
    assert result_code(login(pin_env, syslog_capture, "direct"), "auth") == PAM_SUCCESS
