"""The proof's rule 3 for lines a correct PIN skips (review 3, R1): `auth sufficient
tpm_pin` before the password ends the stack, so every auth line after the password
runs after a correct password and not after a correct PIN. A module the engine does
not know (pam_duo, a pam_exec OTP check, pam_securid, privacyIDEA through pam_python)
may be a second factor: the edit is refused, naming the line, unless its module is
known to check nothing or no failure of it changes a correct password's result.

The unit tests run the proof on two texts of one file; the last two run enable's
written stack through real libpam with a real swtpm and an enrolled PIN."""
from __future__ import annotations

import os
import re

import pytest

from devtools.pamhost import PAM_PYPAM_SO, result_name
from pypam.stack import enable
from pypam.stack.modules import assume_present

from .test_enable import _rules, _stacks

PASSWORD = (b"auth [success=1 default=ignore] pam_unix.so\nauth requisite pam_deny.so\n"
            b"auth required pam_permit.so\n")
PIN_LINE = b"auth sufficient pam_pypam.so module=tpm_pin\n"


def _skipped_checks(tmp_path, after_password: bytes) -> list[str]:
    before = PASSWORD + after_password
    result = _stacks(tmp_path, before, PIN_LINE + before)
    return [e for v in result.violations if v.rule == "skips a check" for e in v.examples]


@pytest.mark.parametrize("line", [
    b"auth required pam_duo.so\n",
    b"auth requisite pam_exec.so quiet /usr/local/bin/check-otp\n",
    b"auth [success=ok default=bad] pam_securid.so\n",
    b"auth required pam_python.so privacyidea_pam.py url=https://otp.example\n",
    # default=ignore, yet a failure lands on pam_deny: only running the stack shows it
    (b"auth [success=1 default=ignore] pam_duo.so\nauth requisite pam_deny.so\n"
     b"auth required pam_permit.so\n"),
])
def test_a_pin_that_skips_an_unknown_check_is_refused(tmp_path, line):
    examples = _skipped_checks(tmp_path, line)
    name = re.search(rb"pam_\w+\.so", line).group().decode()
    assert examples and "/svc:4" in examples[0] and name in examples[0], examples


@pytest.mark.parametrize("line", [
    b"auth optional pam_duo.so\n",              # its failure is ignored
    b"auth sufficient pam_exec.so /bin/false\n",
    b"auth [success=ok default=ignore] pam_securid.so\n",
    b"auth required pam_env.so\n",              # checks nothing (CHECKS_NOTHING)
    b"auth optional pam_cap.so\n",
    b"auth required pam_permit.so\n",
])
def test_a_pin_may_skip_a_line_that_cannot_refuse(tmp_path, line):
    before = PASSWORD + line
    result = _stacks(tmp_path, before, PIN_LINE + before)
    assert result.ok, result.violations


def test_a_check_before_the_password_still_runs_and_is_not_skipped(tmp_path):
    before = b"auth required pam_duo.so\n" + PASSWORD
    after = b"auth required pam_duo.so\n" + PIN_LINE + PASSWORD
    assert _stacks(tmp_path, before, after).ok


def test_a_known_second_factor_is_still_branched_over(tmp_path):
    # pam_u2f is a credential module: the proof tries it failing (rule 3 as before).
    assert "more than the password" in _rules(_stacks(
        tmp_path, PASSWORD + b"auth required pam_u2f.so\n",
        PIN_LINE + PASSWORD + b"auth required pam_u2f.so\n"))


def _tree(tmp_path, sudo: str) -> str:
    root = str(tmp_path / "root")
    pam_d = os.path.join(root, "etc", "pam.d")
    os.makedirs(pam_d)
    with open(os.path.join(pam_d, "common-auth"), "wb") as f:
        f.write(PASSWORD)
    with open(os.path.join(pam_d, "sudo"), "w") as f:
        f.write(sudo)
    return root


def test_enable_refuses_the_service_and_names_the_line(tmp_path):
    root = _tree(tmp_path, "@include common-auth\nauth required pam_duo.so\n"
                 "account required pam_permit.so\n")
    (sp,) = enable.plan(["sudo"], enable.Options(root=root, probe=assume_present))
    assert sp.refused and not sp.changes
    assert "a correct PIN would skip" in sp.refused
    (v,) = [v for v in sp.proof.violations if v.rule == "skips a check"]
    assert v.examples == ["/etc/pam.d/sudo:2 (pam_duo.so)"], v.examples


def test_enable_learns_a_credential_module(tmp_path):
    # A service whose only password module enable does not know is left alone; told
    # with --credential-module, enable puts the PIN before it (and branches over it).
    root = _tree(tmp_path, "auth required pam_matrix.so passdb=/x\n"
                 "account required pam_permit.so\n")
    (sp,) = enable.plan(["sudo"], enable.Options(root=root, probe=assume_present))
    assert "checks no password" in sp.skipped
    (sp,) = enable.plan(["sudo"], enable.Options(root=root, probe=assume_present,
                                                 credentials=frozenset({"pam_matrix"})))
    assert sp.changes and sp.proof.ok, sp.refused
    assert sp.after.splitlines()[2] == b"auth required pam_matrix.so passdb=/x"


def test_a_copied_unknown_check_runs_after_the_pin_but_the_token_may_not(tmp_path):
    # --master-key copies the lines after the password into the PIN's path: pam_duo then
    # runs after a correct PIN too (not skipped), but master_key runs after it, so in a
    # login that pam_duo refuses (rule 4, as for a known check there).
    root = _tree(tmp_path, "@include common-auth\n")
    with open(os.path.join(root, "etc", "pam.d", "lightdm"), "w") as f:
        f.write("@include common-auth\nauth required pam_duo.so\n"
                "-auth optional pam_gnome_keyring.so\naccount required pam_permit.so\n")
    (sp,) = enable.plan(["lightdm"], enable.Options(root=root, probe=assume_present,
                                                    master_key=True))
    assert b"module=tpm_pin\nauth required pam_duo.so\n" in sp.after.replace(b"  ", b" ")
    assert {v.rule for v in sp.proof.violations} == {"token after failure"}, sp.refused
    (v,) = sp.proof.violations
    assert v.examples[0].startswith("/etc/pam.d/lightdm:2 (pam_duo.so) returns"), v.examples


# -- through real libpam: what the refused edit would have let in ------------------------

PIN = "4711"


def _plan_with_exec_false(pin_env, control: str) -> enable.ServicePlan:
    """A service with the password (through an include) then `auth CONTROL pam_exec.so
    /bin/false` (a check that always refuses), root's PIN enrolled; enable's plan."""
    pin_env.enrol("root", PIN)
    pin_env.service("r1common", *PASSWORD.decode().splitlines())
    pin_env.service("r1sudo", f"auth include {pin_env.pamd.path}/r1common",
                    f"auth {control} pam_exec.so quiet /bin/false",
                    "account required pam_permit.so")
    (sp,) = enable.plan(["r1sudo"], enable.Options(confdir=pin_env.pamd.path,
                                                   probe=assume_present,
                                                   module=PAM_PYPAM_SO))
    return sp


def _write(pin_env, sp) -> None:
    """enable's new text, with this environment's policy and the direct backend."""
    pin_env.pamd.write("r1sudo", sp.after.decode().replace(
        f"{PAM_PYPAM_SO} module=tpm_pin",
        f"{PAM_PYPAM_SO} module=tpm_pin policy={pin_env.policy} backend=direct"))


def test_a_pin_alone_never_passes_a_second_factor(pin_env):
    # `required pam_exec.so /bin/false` stands for pam_duo: nobody gets in before the
    # edit. Main's enable proved `auth sufficient tpm_pin` before the password safe,
    # and the written stack let a correct PIN alone in.
    sp = _plan_with_exec_false(pin_env, "required")
    assert result_name(pin_env.run("r1sudo", answers=["not the password"]),
                       "auth") == "PAM_AUTH_ERR"
    if sp.changes:  # what the old code wrote: run it
        _write(pin_env, sp)
        report = pin_env.run("r1sudo", answers=[PIN])
        assert result_name(report, "auth") != "PAM_SUCCESS", "a PIN alone got in"
    assert sp.refused and "skips a check" in {v.rule for v in sp.proof.violations}


def test_a_pin_may_skip_an_optional_line_and_gets_in(pin_env):
    # The same stack with the failing line `optional`: it cannot refuse a login, enable
    # writes the PIN line, and a correct PIN gets in through real libpam (a wrong one not).
    sp = _plan_with_exec_false(pin_env, "optional")
    assert sp.changes and sp.proof.ok, sp.refused
    _write(pin_env, sp)
    assert result_name(pin_env.run("r1sudo", answers=[PIN]), "auth") == "PAM_SUCCESS"
    assert result_name(pin_env.run("r1sudo", answers=["1234", "not the password"]),
                       "auth") != "PAM_SUCCESS"
