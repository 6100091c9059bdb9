"""Enrolling on a TPM whose owner hierarchy has no password (the factory state, the
default install): review 3's R3.

The attacker: anyone who can boot this machine from another medium (a live USB stick:
root there, the same TPM, no account, no disk access, so disk encryption with a
passphrase does not stop them). With the empty owner password they undefine a user's
PIN index and define one at the same handle with a PIN of their own; the enrolment
record (uid, name, handle) and the salt key record (same owner seed) still match, so
that PIN logs in (screen locker, sudo). `pinutil owner protect` closes it, at a cost
to other software (README, "The owner hierarchy"), so it is not automatic. Instead:

- every setup on such a TPM, root's direct one and a user's through pinutild, says so
  (what the attacker can do, the command that closes it, its cost);
- the policy's `require_owner_protection = yes` makes setup refuse there, before any
  TPM change: no index, no record.

On the code before: setup said nothing and had no such option (these tests fail).
"""
from __future__ import annotations

import json
import os
import subprocess

from devtools.pamhost import PAM_PYPAM_SO, result_name
from tests.service.enrol_support import (
    PASSWORD,
    UID,
    USER,
    as_user,
    running_in_namespace,
)
from tests.support.pin_env import NV_BASE, handle_of
from tests.test_owner_auth import protect

PIN, PLANTED = "2580", "9999"
# What every warning must say: who, what, and the way out.
WARNED = (b"boot", b"another medium", b"pinutil owner protect", b"empty owner password")


def warned(text: bytes) -> bool:
    return all(part in text for part in WARNED)


def setup_root(pin_env, *options: str):
    return pin_env.pinutil(*options, "--stdin", "setup", "root", stdin=PIN + "\n")


def plant(pin_env, user: str) -> None:
    """The other system: undefine the user's index (tpm2-tools, empty owner password)
    and define one with the attacker's PIN at the same handle."""
    from pinutil.pin.index import PinIndex
    from pinutil.tpm.context import Tpm

    pin_env.swtpm.tools("tpm2_nvundefine", "-C", "o", hex(handle_of(user)),
                        check=False)  # none there after a refused setup
    with Tpm(pin_env.swtpm.tcti) as tpm:
        PinIndex(tpm, handle_of(user)).define(PLANTED.encode(), 3, salted=False)


def login(pin_env, user: str, pin: str) -> str:
    svc = pin_env.service("r3", " ".join([
        "auth required", PAM_PYPAM_SO, "module=tpm_pin", f"policy={pin_env.policy}",
        "backend=direct"]))
    return result_name(pin_env.run(svc, user=user, answers=[pin]), "auth")


def test_root_setup_on_an_unprotected_tpm_warns_of_the_planted_pin(pin_env):
    human = setup_root(pin_env)
    assert human.returncode == 0, human.stderr
    assert warned(human.stdout + human.stderr), human
    # --json: the flag and the same words, every time (after a delete too).
    assert pin_env.pinutil("--yes", "delete", "root").returncode == 0
    done = setup_root(pin_env, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["owner_unprotected"] is True, answer
    assert warned(answer["owner_warning"].encode()), answer
    # What the warning says is true: the planted PIN gets in (the default stays open).
    plant(pin_env, "root")
    assert login(pin_env, "root", PLANTED) == "PAM_SUCCESS"


def test_required_protection_refuses_setup_on_an_unprotected_tpm(pin_env):
    pin_env.write_policy(require_owner_protection="yes")
    done = setup_root(pin_env, "--json")
    assert done.returncode == 6, (done.stdout, done.stderr)  # permission_denied
    assert json.loads(done.stdout)["result"] == "permission_denied"
    assert b"pinutil owner protect" in done.stderr, done.stderr
    assert b"require_owner_protection" in done.stderr, done.stderr
    # Nothing enrolled: no index, no record; a planted index then logs no one in.
    assert handle_of("root") not in pin_env.enrolled_handles()
    assert not os.path.lexists(os.path.join(pin_env.enrolment_dir, "0"))
    plant(pin_env, "root")
    assert login(pin_env, "root", PLANTED) != "PAM_SUCCESS"


def test_required_protection_enrols_on_a_protected_tpm_without_a_warning(pin_env):
    protect(pin_env)
    pin_env.write_policy(require_owner_protection="yes")
    done = setup_root(pin_env, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["owner_unprotected"] is False and "owner_warning" not in answer, answer
    assert b"WARNING" not in done.stderr, done.stderr
    assert pin_env.counter("root") == (0, 3)
    # The attacker's recipe is refused by the TPM itself now.
    attempt = pin_env.swtpm.tools("tpm2_nvundefine", "-C", "o", hex(handle_of("root")),
                                  check=False)
    assert attempt.returncode != 0
    assert login(pin_env, "root", PIN) == "PAM_SUCCESS"


def _setup_through_service(pin_env, accounts, launcher):
    return subprocess.run([*accounts.prefix(), *as_user(), launcher, "--stdin", "setup"],
                          input=f"{PASSWORD}\n{PIN}\n".encode(), capture_output=True,
                          timeout=120, check=False, env={}, cwd="/")


def test_a_users_setup_through_pinutild_warns_and_is_refused_when_required(
        pin_env, accounts):
    accounts.add_user(USER, UID, PASSWORD)
    launcher = pin_env.build_launcher(os.path.join(pin_env.dir, "pinutil-plain"), mode=0o755)
    with running_in_namespace(pin_env, accounts) as service:
        pin_env.policy_extra["service_socket"] = service.socket
        pin_env.write_policy(require_owner_protection="yes")
        refused = _setup_through_service(pin_env, accounts, launcher)
        assert refused.returncode == 6, (refused.stderr, service.output())
        assert b"pinutil owner protect" in refused.stderr, refused.stderr
        assert NV_BASE + UID not in pin_env.enrolled_handles()

        pin_env.write_policy()
        done = _setup_through_service(pin_env, accounts, launcher)
        assert done.returncode == 0, (done.stderr, service.output())
        assert warned(done.stdout + done.stderr), done
        assert pin_env.swtpm.read_pin_counter(NV_BASE + UID) == (0, 3)
