"""A second factor the stack engine does not know, run for real (review 3, R1 and R1b).

`pypam enable` puts `auth sufficient tpm_pin` before the password; a module after the
password that the engine does not know (pam_duo, pam_exec, pam_securid, ...) must count
as a check the PIN would skip, never as "assumed to succeed". Here the second factor is
`pam_exec.so /bin/false` (always fails, so NOBODY gets in before the edit): enable must
refuse the service, or write a stack where a correct PIN alone still does not get in.
Every layout failed on 0cf7ca8 (the PIN alone got in); `either-of-two` (two factors,
either one enough) still failed when each unknown line was tried failing alone
(f835725), since each alone falls through to the other."""
from __future__ import annotations

import pytest

from devtools.pamhost import PAM_PYPAM_SO, result_name
from pypam.stack import enable
from pypam.stack.modules import assume_present

PIN = "4711"
SECOND_FACTOR = "auth required pam_exec.so quiet /bin/false"  # stands for pam_duo.so


#: (common-auth lines, the service's lines after the include): the second factor as a
#: `required` line in the service (Duo's sudo recipe), or as a jump gate inside the
#: included file (Duo's common-auth recipe: `[success=1 default=ignore] pam_duo.so`
#: then `requisite pam_deny.so`).
LAYOUTS = {
    "required-after": (["auth [success=1 default=ignore] pam_unix.so nullok",
                        "auth requisite pam_deny.so", "auth required pam_permit.so"],
                       [SECOND_FACTOR]),
    # Two second factors, either one enough (Duo, or an OTP checked by pam_exec): each
    # alone "cannot refuse" while the other is assumed to succeed.
    "either-of-two": (["auth requisite pam_unix.so nullok",
                       "auth [success=2 default=ignore] pam_exec.so quiet /bin/false",
                       "auth [success=1 default=ignore] pam_exec.so quiet /usr/bin/false",
                       "auth requisite pam_deny.so", "auth required pam_permit.so"], []),
    "gate-in-common": (["auth requisite pam_unix.so nullok",
                        "auth [success=1 default=ignore] pam_exec.so quiet /bin/false",
                        "auth requisite pam_deny.so", "auth required pam_permit.so"], []),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_enable_never_lets_a_pin_skip_a_second_factor(pin_env, layout):
    pin_env.enrol("root", PIN)
    common, after_include = LAYOUTS[layout]
    pin_env.service("r3common", *common)
    pin_env.service("r3sudo", f"auth include {pin_env.pamd.path}/r3common", *after_include,
                    "account required pam_permit.so")

    (sp,) = enable.plan(["r3sudo"], enable.Options(confdir=pin_env.pamd.path,
                                                   probe=assume_present,
                                                   module=PAM_PYPAM_SO))
    # Before the edit nobody gets in (the second factor always fails).
    before = pin_env.run("r3sudo", user="root", answers=["not the password"])
    assert result_name(before, "auth") != "PAM_SUCCESS", before

    assert sp.changes or sp.refused, (sp.skipped, sp.refused)
    if sp.refused:  # the safe outcome: enable refuses to write this service
        return
    # Otherwise enable would write sp.after: run it for real (with this env's policy).
    after = sp.after.decode().replace(
        f"{PAM_PYPAM_SO} module=tpm_pin",
        f"{PAM_PYPAM_SO} module=tpm_pin policy={pin_env.policy} backend=direct")
    pin_env.pamd.write("r3sudo", after)
    report = pin_env.run("r3sudo", user="root", answers=[PIN])
    assert result_name(report, "auth") != "PAM_SUCCESS", (
        "enable's proof passed (" + str(sp.proof and sp.proof.ok) + ") and the written "
        "stack lets a PIN alone past the second factor:\n" + after)
