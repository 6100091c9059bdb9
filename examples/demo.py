"""`make demo`: the PIN login story, through real libpam and the PIN service pinutild,
against a software TPM.

Everything lives in a temporary directory (a swtpm, a policy file and its enrolment
records, pinutild's socket, a private pam.d directory and a throw-away password file
for pam_wrapper's pam_matrix); nothing on the machine is changed, and the directory
is removed at the end. The demo user is the one
running it (root under `make demo`): its PIN index exists only in the demo's own TPM.
"""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from devtools.pamhost import PAM_WRAPPER_DIR, run_pam
from devtools.pinutild import Pinutild
from devtools.swtpm import start_swtpm

SHIM = os.path.join(ROOT, "build", "pam_pypam.so")
PINUTIL = os.path.join(ROOT, "build", "pinutil")
PIN, PASSWORD = "2468", "correct horse battery staple"


def say(text: str) -> None:
    print(f"\n=== {text}")


def login(confdir: str, user: str, answers: list[str], note: str,
          service: str = "demo-login") -> int:
    """One PAM authentication; print what the user would see and the result."""
    print(f"--- {note}")
    report = run_pam(confdir, service, user=user, answers=answers)
    typed = iter(answers)
    for message in report["messages"]:
        if message["style"] in (1, 2):  # a prompt: show what was typed (masked)
            answer = next(typed, "")
            print(f"  {message['text']}{'*' * len(answer)}")
        else:
            print(f"  [{'error' if message['style'] == 3 else 'info'}] {message['text']}")
    stage = report["stages"][0]
    print(f"  => {stage['name']}")
    return stage["rc"]


def write_keyring_stack(confdir: str, policy: str, passdb: str) -> None:
    """examples/pam.d's decide substack, with pam_matrix standing in for pam_unix and a
    stand-in keyring after it (libpam 1.5.2 wants a substack by absolute path here)."""
    with open(os.path.join(ROOT, "examples", "pam.d", "pypam-decide")) as f:
        decide = f.read()
    decide = decide.replace("pam_pypam.so module=tpm_pin", f"{SHIM} module=tpm_pin policy={policy}")
    decide = decide.replace("pam_pypam.so module=master_key",
                            f"{SHIM} module=master_key policy={policy}")
    decide = decide.replace("pam_unix.so try_first_pass",
                            f"{PAM_WRAPPER_DIR}/pam_matrix.so passdb={passdb}")
    with open(os.path.join(confdir, "pypam-decide"), "w") as f:
        f.write(decide)
    with open(os.path.join(confdir, "demo-keyring"), "w") as f:
        f.write(f"auth substack {confdir}/pypam-decide\n"
                f"auth optional {SHIM} module=keyring_standin moduledir={ROOT}/examples\n")


def pinutil(policy: str, *args: str, stdin: str = "") -> str:
    done = subprocess.run([PINUTIL, "--policy", policy, *args], input=stdin.encode(),
                          capture_output=True, check=False)
    return (done.stdout or done.stderr).decode().strip()


def main() -> int:
    user = pwd.getpwuid(os.getuid()).pw_name
    work = tempfile.mkdtemp(prefix="pypam-demo-", dir="/tmp")
    tpm = service = None
    try:
        say("Software TPM")
        tpm = start_swtpm(os.path.join(work, "tpm"))
        print(f"swtpm running, TCTI {tpm.tcti}")

        policy = os.path.join(work, "policy")
        with open(policy, "w") as f:
            f.write(f"# demo policy\npin_min_length = 4\npin_lockout_max_attempts = 3\n"
                    f"tcti = {tpm.tcti}\npinutil_path = {PINUTIL}\n"
                    f"master_key_file = {work}/sealed_master_key\n"
                    f"master_key_auth_file = {work}/master_key_auth\n"
                    f"owner_auth_file = {work}/owner-auth\n"
                    f"state_dir = {work}\n"
                    f"service_socket = {work}/pinutild.sock\n")
        passdb = os.path.join(work, "passdb")
        with open(passdb, "w") as f:
            f.write(f"{user}:{PASSWORD}:demo-login\n{user}:{PASSWORD}:demo-keyring\n")
        confdir = os.path.join(work, "pam.d")
        os.mkdir(confdir)
        with open(os.path.join(confdir, "demo-login"), "w") as f:
            f.write(f"auth sufficient {SHIM} module=tpm_pin policy={policy}\n"
                    f"auth required {PAM_WRAPPER_DIR}/pam_matrix.so passdb={passdb}\n")
        with open(os.path.join(confdir, "demo-login")) as f:
            print("pam.d/demo-login:\n  " + f.read().strip().replace("\n", "\n  "))

        say("The PIN service")
        service = Pinutild(policy, os.path.join(work, "pinutild.sock"))
        service.start()
        print(f"pinutild listening on {service.socket}: it alone opens the TPM; every login "
              "below asks it (tpm_pin and master_key use it when its socket exists)")

        say(f"Enrol a PIN for {user} (pinutil setup)")
        print(pinutil(policy, "--stdin", "setup", user, stdin=PIN + "\n"))
        print(pinutil(policy, "status", user))

        say("Log in with the PIN")
        ok = login(confdir, user, [PIN], "right PIN") == 0

        say("A wrong PIN: the TPM counts it")
        ok &= login(confdir, user, ["1111", "not-my-password"],
                    "wrong PIN, then a wrong password: the login fails") == 7
        print("  " + pinutil(policy, "status", user))

        say("Two more wrong PINs: the TPM locks the PIN")
        login(confdir, user, ["2222", "x"], "wrong PIN (the prompt shows the attempts left)")
        login(confdir, user, ["3333", "x"], "wrong PIN (last attempt)")
        print("  " + pinutil(policy, "status", user))
        ok &= login(confdir, user, [PASSWORD], "locked: the stack falls back to the password") == 0

        say("Master key: the keyring gets the same token after a PIN or a password login")
        words = pinutil(policy, "--yes", "master-key", "init").splitlines()[0].split()
        print(f"master key created; recovery phrase ({len(words)} words, shown once): "
              f"{' '.join(words[:3])} ...")
        print(pinutil(policy, "--stdin", "change", user, stdin=PIN + "\n"),
              "(root resets the locked PIN)")
        write_keyring_stack(confdir, policy, passdb)
        ok &= login(confdir, user, [PIN], "PIN login", "demo-keyring") == 0
        ok &= login(confdir, user, ["0000", PASSWORD],
                    "wrong PIN, then the password", "demo-keyring") == 0
        ok &= login(confdir, user, ["0000", "nope"], "a failed login", "demo-keyring") == 7

        say("The TPM is gone: password still works")
        tpm.kill()
        ok &= login(confdir, user, [PASSWORD], "TPM unavailable") == 0

        say("Demo " + ("finished: every step behaved as described" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if service is not None:
            service.stop()
        if tpm is not None:
            tpm.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
