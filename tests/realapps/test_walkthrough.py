"""The README's walk-through "Turn on PIN unlock", step by step, in the sandbox: the
example policy, the enrolment proof's service, a user's own `pinutil setup`, `pypam
enable tpm_pin --preset unlock` (the dry run changes nothing), `--apply`, pamtester and
sudo with the PIN, and `pypam disable --apply` (every pam.d file byte-identical, checked
by the fixture when the test ends)."""
from __future__ import annotations

import os

import pexpect

from tests.realapps.harness import (
    PINUTIL_INSIDE,
    POLICY,
    PYPAM_COMMAND,
    Account,
    Transcript,
)
from tests.support.pamhost import PAM_PYPAM_SO
from tests.support.pin_env import ROOT

CAROL = Account("carol", 4303, "carol's long passphrase", "97531")


def example(name: str) -> str:
    with open(os.path.join(ROOT, "examples", name), encoding="utf-8") as f:
        return f.read()


def test_readme_walkthrough(pin_box):
    box = pin_box.box
    # 1. The example policy (its TPM is this test's swtpm) and the proof's service.
    policy = example("policy").replace("tcti = device:/dev/tpmrm0",
                                       f"tcti = {pin_box.swtpm.tcti}")
    assert policy != example("policy")
    box.write(POLICY, policy)
    box.write("/etc/pam.d/pinutil", example("pam.d/pinutil"))
    # The state directory as `make install SERVICE=no` leaves it (the harness's root
    # enrolments made it so: no account pinutild here).
    assert box.run(["stat", "-c", "%a %U %G", "/var/lib/pinutild",
                    "/var/lib/pinutild/enrolments"]).stdout.decode() \
        == "750 root tss\n770 root tss\n"
    # 2. The user enrols their own PIN: password first, then the PIN.
    box.add_user(CAROL.name, CAROL.uid, CAROL.password, groups=["sudo"])
    box.run([PINUTIL_INSIDE, "--stdin", "setup"], user=CAROL.name,
            input=f"{CAROL.password}\n{CAROL.pin}\n")
    assert pin_box.counter(CAROL) == (0, 5)          # the example policy's limit
    # 3. The dry run shows the diff and writes nothing.
    enable = [*PYPAM_COMMAND, "enable", "tpm_pin", "--preset", "unlock",
              "--module-path", PAM_PYPAM_SO]
    before = pin_box.pam_files()
    shown = box.run(enable).stdout.decode()
    assert "+auth  sufficient" in shown and "dry run: nothing written" in shown
    assert pin_box.pam_files() == before
    # 4. --apply (the fixture's unwire() later checks that disable restores everything).
    pin_box.before_enable = before
    assert "written: /etc/pam.d/sudo" in box.run([*enable, "--apply"]).stdout.decode()
    assert "applied" in box.run([*PYPAM_COMMAND, "status"]).stdout.decode()
    # 5. pamtester, as the README says, before logging out.
    child = box.spawn(["pamtester", "sudo", CAROL.name, "authenticate"])
    seen = Transcript(child)
    child.expect("PIN: ")
    child.sendline(CAROL.pin)
    child.expect("pamtester: successfully authenticated")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    # 6. sudo itself, as carol.
    child = box.spawn(["sudo", "-k", "sh", "-c", "echo ROOT-$(id -u)"], user=CAROL.name)
    seen = Transcript(child)
    child.expect("PIN: ")
    child.sendline(CAROL.pin)
    child.expect("ROOT-0")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, seen
    assert pin_box.counter(CAROL) == (0, 5)
