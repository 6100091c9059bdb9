"""PIN login wired into the real Debian stacks of a sandbox (tests/support/sandbox.py).

`PinBox` turns a fresh `Sandbox` into a machine with pypam installed the way an admin
would without the service (`make install SERVICE=no`, the helper backend): the policy
at its default path /etc/pinpam/policy (tcti = this test's swtpm), `/usr/bin/pinutil`
a root:tss 2755 copy of build/pinutil (its built-in policy path is
/etc/pinpam/policy), the swtpm reachable by root and group tss only (its state
directory root:tss 0710, like /dev/tpmrm0 root:tss 0660), the state directory at its
default /var/lib/pinutild (root:tss, made by root's first enrolment), and three
accounts: root, and two sudoers
`alice` and `bob` with passwords and PINs enrolled by root. Nothing but the module
itself is referenced outside the sandbox: build/pam_pypam.so by absolute path
(`wire_common_auth` copies it into the sandbox's module directory instead).

`wire(service, ...)` runs the admin command inside, on the sandbox's own Debian stacks:

    pypam enable tpm_pin --service SERVICE ... --module-path /abs/build/pam_pypam.so --apply

which puts `auth sufficient ... module=tpm_pin` before the service's password
(`@include common-auth`) after proving the edit with the simulator, and records what
it changed. Every pam.d file is snapshot (bytes, owner, mode) first; when the test is
over, `unwire()` runs `pypam disable --apply` and asserts that every file is
byte-identical to the snapshot. `wire_common_auth()` does the same with `--preset
local`, which on Debian goes through pam-auth-update: the PIN line lands in
common-auth and so reaches sshd, where the module's own rule for remote logins applies
(the sshd tests; enable refuses a PIN line in sshd's own file).

The TPM's own failure counter is read out of band (`failures(user)`): the oracle for
"no attempt spent" shares no code with the module.
"""
from __future__ import annotations

import fcntl
import grp
import json
import os
import shutil
import time
from dataclasses import dataclass

from tests.support.pamhost import PAM_PYPAM_SO
from tests.support.pin_env import NV_BASE, PINUTIL, ROOT
from tests.support.sandbox import Sandbox

LIMIT = 3
POLICY = "/etc/pinpam/policy"
PINUTIL_INSIDE = "/usr/bin/pinutil"
PAM_MODULE_DIR = "/usr/lib/x86_64-linux-gnu/security"
#: The admin command, run inside the sandbox from this source tree.
PYPAM_COMMAND = ["env", f"PYTHONPATH={ROOT}", os.path.join(ROOT, ".venv", "bin", "python"),
                 "-m", "pypam"]
TIMINGS = os.path.join(ROOT, "bench", "realapps.json")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    password: str
    pin: str


ALICE = Account("alice", 4301, "alice's long passphrase", "2580")
BOB = Account("bob", 4302, "bob's long passphrase", "739146")
ROOT_ACCOUNT = Account("root", 0, "root's long passphrase", "8642")
#: A PIN neither alice nor bob has.
WRONG_PIN = "1111"


class PinBox:
    """A sandbox with pypam installed, two enrolled sudoers and root; see module doc."""

    def __init__(self, sandbox: Sandbox, swtpm) -> None:
        self.box = sandbox
        self.swtpm = swtpm
        self.before_enable: dict | None = None     # pam.d as it was before `wire`
        tss = grp.getgrnam("tss").gr_gid
        # Only root and group tss reach the TPM, as with /dev/tpmrm0 (root:tss 0660).
        os.chown(swtpm.state_dir, 0, tss)
        os.chmod(swtpm.state_dir, 0o710)
        self.box.write(POLICY, "".join(f"{k} = {v}\n" for k, v in {
            "tcti": swtpm.tcti, "pin_min_length": 4, "pin_max_length": 8,
            "pin_lockout_max_attempts": LIMIT, "pin_charset": "digits",
            "helper_timeout": 10}.items()))
        self._install_pinutil(tss)
        self.box.set_password("root", ROOT_ACCOUNT.password)
        for account in (ALICE, BOB):
            self.box.add_user(account.name, account.uid, account.password, groups=["sudo"])
            self.enrol(account)

    def _install_pinutil(self, tss: int) -> None:
        target = self.box.path(PINUTIL_INSIDE)
        shutil.copyfile(PINUTIL, target)
        os.chown(target, 0, tss)
        os.chmod(target, 0o2755)

    # -- PINs ---------------------------------------------------------------------------
    def enrol(self, account: Account) -> None:
        """Root enrols `account`'s PIN with the installed pinutil (no password proof)."""
        self.box.run([PINUTIL_INSIDE, "--stdin", "setup", account.name],
                     input=account.pin + "\n")
        assert self.counter(account) == (0, LIMIT)

    def counter(self, account: Account) -> tuple[int, int]:
        """(pinCount, pinLimit) read by tpm2-tools as owner: spends no attempt."""
        return self.swtpm.read_pin_counter(NV_BASE + account.uid)

    def failures(self, account: Account) -> int:
        return self.counter(account)[0]

    # -- stacks ---------------------------------------------------------------------------
    def pam_files(self) -> dict[str, tuple[bytes, int, int, int]]:
        """Every /etc/pam.d file inside: bytes, owner, group, mode."""
        out = {}
        pam_d = self.box.path("/etc/pam.d")
        for name in sorted(os.listdir(pam_d)):
            st = os.lstat(os.path.join(pam_d, name))
            with open(os.path.join(pam_d, name), "rb") as f:
                out[name] = (f.read(), st.st_uid, st.st_gid, st.st_mode)
        return out

    def pypam(self, *args: str) -> str:
        done = self.box.run([*PYPAM_COMMAND, *args])
        return done.stdout.decode()

    def wire(self, *services: str, text: str | None = None) -> str:
        """`pypam enable tpm_pin --apply` for the services (the first one created from
        `text` first, as an admin would); return the first service's new file."""
        if text is not None:
            self.box.write(f"/etc/pam.d/{services[0]}", text)
        self.before_enable = self.pam_files()
        flags = [arg for name in services for arg in ("--service", name)]
        out = self.pypam("enable", "tpm_pin", *flags, "--module-path", PAM_PYPAM_SO, "--apply")
        assert "written:" in out, out
        return self.box.read(f"/etc/pam.d/{services[0]}")

    def wire_common_auth(self, *extra: str) -> str:
        """`pypam enable tpm_pin --preset local --apply` the Debian way: our profile and
        module installed where `make install` puts them (inside only), then
        pam-auth-update writes common-auth. Returns the new common-auth."""
        shutil.copyfile(os.path.join(ROOT, "debian", "pam-configs", "pypam-tpm-pin"),
                        self.box.path("/usr/share/pam-configs/pypam-tpm-pin"))
        shutil.copyfile(PAM_PYPAM_SO, self.box.path(f"{PAM_MODULE_DIR}/pam_pypam.so"))
        self.before_enable = self.pam_files()
        out = self.pypam("enable", "tpm_pin", "--preset", "local", *extra, "--apply")
        assert "written: /etc/pam.d/common-auth" in out, out
        return self.box.read("/etc/pam.d/common-auth")

    def unwire(self) -> None:
        """`pypam disable --apply`: every pam.d file as before `wire`, byte for byte."""
        if self.before_enable is None:
            return
        self.pypam("disable", "--apply")
        assert self.pam_files() == self.before_enable


class Transcript:
    """Everything a pexpect child showed, for assertion messages and checks."""

    def __init__(self, child) -> None:
        import io

        self.buffer = io.StringIO()
        child.logfile_read = self.buffer

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def __str__(self) -> str:
        return self.text


class Stopwatch:
    """Wall time of one PIN login: process start -> PIN prompt -> success seen."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic() - self.start


class TimingLog:
    """Collects one entry per application; written to bench/realapps.json at the end."""

    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}

    def record(self, app: str, watch: Stopwatch, note: str) -> None:
        marks = watch.marks
        self.entries[app] = {
            "start_to_pin_prompt_s": round(marks["prompt"], 4),
            "pin_sent_to_success_s": round(marks["success"] - marks["pin_sent"], 4),
            "total_s": round(marks["success"], 4),
            "note": note,
        }

    def record_values(self, app: str, values: dict, note: str) -> None:
        """For a client without a prompt to wait for (python-pam): its own figures."""
        self.entries[app] = {**values, "note": note}

    def write(self, path: str = TIMINGS) -> None:
        if not self.entries:
            return
        # Merged with what other runs (or pytest-xdist workers) wrote, under a lock.
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._merge_into(path)

    def _merge_into(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f).get("apps", {})
        except (OSError, ValueError):
            old = {}
        data = {
            "what": "wall time of one PIN login per real application, driven on a pty "
                    "inside the sandbox (tests/realapps); one sample each, not a benchmark",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kernel": os.uname().release,
            "apps": {**old, **self.entries},
        }
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
