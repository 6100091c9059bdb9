"""A complete PIN login test environment: fixture `pin_env`.

One `PinEnv` per test holds:

- its own swtpm (the `swtpm` fixture) and a root-owned 0755 work directory under /tmp
  (short paths, readable by `nobody` for the set-uid cases);
- a policy file there (root-owned, 0644) with `tcti = <swtpm.tcti>`,
  `pinutil_path = build/pinutil`, a small lockout limit and short timeouts;
- `enrol(user, pin)`: `build/pinutil --policy P --stdin setup USER`, as root;
- `counter(user)`: the TPM's own (pinCount, pinLimit), read out of band with
  tpm2-tools as owner (spends no attempt; shares no code with the module);
- a private pam.d directory and `tpm_pin_line(...)` / `service(...)` to write stacks;
- a copy of tests/pin_modules/ in a root-owned, non-writable directory (pypam's loader
  refuses modules from a directory that a checkout's umask may have left writable);
- a pam_matrix password database (`password`), for fallback stacks;
- `build_launcher(...)`: a pinutil launcher whose built-in policy path is this
  environment's policy, for helpers run by a non-root caller (who may not pass
  --policy).

Nothing outside the work directory and the swtpm state directory is touched; both are
removed afterwards.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, PAM_WRAPPER_DIR, PamService, run_pam

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PINUTIL = os.path.join(ROOT, "build", "pinutil")
PIN_MODULES_SRC = os.path.join(ROOT, "tests", "pin_modules")
PAM_MATRIX = os.path.join(PAM_WRAPPER_DIR, "pam_matrix.so")
NV_BASE = 0x01000000

#: Policy values of every environment unless a test overrides them.
DEFAULT_POLICY: dict[str, str] = {
    "pin_min_length": "4",
    "pin_max_length": "8",
    "pin_lockout_max_attempts": "3",
    "pin_charset": "digits",
    "helper_timeout": "10",
}

PASSWORD = "correct horse battery"


def uid_of(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def handle_of(user: str) -> int:
    """pinpam's handle for a user: nv_base + uid."""
    return NV_BASE + uid_of(user)


class PinEnv:
    """Everything one tpm_pin test needs; see the module docstring."""

    def __init__(self, swtpm: Any, workdir: str, pamd: PamService) -> None:
        self.swtpm = swtpm
        self.dir = workdir
        self.pamd = pamd
        self.policy = os.path.join(workdir, "policy")
        self.module_dir = os.path.join(workdir, "modules")
        self.passdb = os.path.join(workdir, "passdb")
        # The service's state directory is the work directory (pinutil/pin/state.py):
        # the salt key record `salt_key` and the enrolment records `enrolments/`, which
        # the first root setup creates.
        self.enrolment_dir = os.path.join(workdir, "enrolments")
        # Policy keys every rewrite keeps (e.g. `service_socket`, set by pinutild_policy).
        self.policy_extra: dict[str, str] = {}
        self._copy_test_modules()
        self.write_policy()
        self.record_salt_key()

    def record_salt_key(self) -> None:
        """The installation step `pinutil salt-key record` (in-process: it runs for
        every test): the salt key's Name in `salt_key` of the state directory, which every
        salted check trusts. tests/test_salt_key_record.py covers the command itself."""
        from pinutil.pin import salt_key
        from pinutil.tpm import sapi
        from pinutil.tpm.context import Tpm

        with Tpm(self.swtpm.tcti) as tpm:
            salt_key.save(os.path.join(self.dir, "salt_key"), sapi.salt_key_name(tpm))

    # -- files ------------------------------------------------------------------------
    def _copy_test_modules(self) -> None:
        os.mkdir(self.module_dir, 0o755)
        os.chmod(self.module_dir, 0o755)
        for name in os.listdir(PIN_MODULES_SRC):
            if name.endswith(".py"):
                target = os.path.join(self.module_dir, name)
                shutil.copyfile(os.path.join(PIN_MODULES_SRC, name), target)
                os.chmod(target, 0o644)

    def policy_text(self, **overrides: str | None) -> str:
        # A service socket of our own that does not exist (unless a test starts one): a
        # pinutild running on the machine itself must never answer a test's `auto`.
        values = {"tcti": self.swtpm.tcti, "pinutil_path": PINUTIL,
                  "state_dir": self.dir,
                  "service_socket": os.path.join(self.dir, "no-pinutild.sock"),
                  # Not the machine's /var/lib/pinutild: the test's own state directory.
                  "master_key_auth_file": os.path.join(self.dir, "pinutild", "master_key_auth"),
                  # Its own owner password file (absent unless a test protects the TPM).
                  "owner_auth_file": os.path.join(self.dir, "owner-auth"),
                  **DEFAULT_POLICY, **self.policy_extra}
        for key, value in overrides.items():
            if value is None:
                values.pop(key, None)
            else:
                values[key] = str(value)
        return "".join(f"{key} = {value}\n" for key, value in values.items())

    def write_policy(self, path: str | None = None, **overrides: str | None) -> str:
        """(Re)write a root-owned 0644 policy file; `key=None` drops a key."""
        path = path or self.policy
        write_file(path, self.policy_text(**overrides))
        return path

    def record_file(self, name: str = "record.jsonl") -> str:
        return os.path.join(self.dir, name)

    # -- enrolment and the out-of-band oracle -----------------------------------------
    def pinutil_command(self, *args: str, policy: str | None = None) -> list[str]:
        return [PINUTIL, "--policy", policy or self.policy, *args]

    def pinutil(self, *args: str, stdin: str | bytes = b"",
                policy: str | None = None) -> subprocess.CompletedProcess:
        """build/pinutil as root with this environment's policy."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return subprocess.run(self.pinutil_command(*args, policy=policy),
                              input=data, capture_output=True, timeout=60, check=False,
                              env={}, cwd="/")

    def enrol(self, user: str, pin: str) -> None:
        done = self.pinutil("--json", "--stdin", "setup", user, stdin=pin + "\n")
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert self.counter(user) == (0, int(DEFAULT_POLICY["pin_lockout_max_attempts"]))

    def counter(self, user: str) -> tuple[int, int]:
        """(pinCount, pinLimit) of the user's index, read as owner with tpm2-tools."""
        return self.swtpm.read_pin_counter(handle_of(user))

    def failures(self, user: str) -> int:
        return self.counter(user)[0]

    def enrolled_handles(self) -> list[int]:
        return self.swtpm.nv_handles()

    # -- pam.d ----------------------------------------------------------------------------
    def tpm_pin_line(self, *args: str, control: str = "required", backend: str = "direct",
                     policy: str | None = None) -> str:
        parts = ["auth", control, PAM_PYPAM_SO, "module=tpm_pin",
                 f"policy={policy or self.policy}"]
        if backend is not None:
            parts.append(f"backend={backend}")
        return " ".join([*parts, *args])

    def test_module_line(self, module: str, *args: str, control: str = "optional") -> str:
        return " ".join(["auth", control, PAM_PYPAM_SO, f"module={module}",
                         f"moduledir={self.module_dir}", *args])

    def matrix_line(self, control: str = "required") -> str:
        return f"auth {control} {PAM_MATRIX} passdb={self.passdb}"

    def service(self, name: str, *lines: str) -> str:
        """Write the service file `name` with these lines; return the name."""
        self.pamd.write(name, "\n".join(lines))
        return name

    def set_password(self, user: str, service: str, password: str = PASSWORD) -> None:
        """A pam_matrix entry (user:password:service) for a fallback stack."""
        with open(self.passdb, "a", encoding="utf-8") as f:
            f.write(f"{user}:{password}:{service}\n")
        os.chmod(self.passdb, 0o600)

    # -- running ----------------------------------------------------------------------
    def run(self, service: str, user: str | None = "root",
            answers: Sequence[str | bytes] = (), **kwargs: Any) -> dict[str, Any]:
        """One PAM transaction through build/pamhost; adds `elapsed` (seconds)."""
        start = time.monotonic()
        report = run_pam(self.pamd, service, user=user, answers=answers, **kwargs)
        report["elapsed"] = time.monotonic() - start
        return report

    # -- a pinutil launcher with this policy built in ------------------------------------
    def build_launcher(self, path: str | None = None, mode: int = 0o755) -> str:
        """A launcher like build/pinutil whose default policy is this env's policy.

        Root-owned in the work directory; `mode` may add set-id bits (e.g. 0o4755)."""
        sys.path.insert(0, os.path.join(ROOT, "shim"))
        try:
            import build_native
        finally:
            sys.path.remove(os.path.join(ROOT, "shim"))
        path = path or os.path.join(self.dir, "pinutil")
        search = [ROOT, os.path.join(ROOT, ".venv", "lib",
                                     f"python{sys.version_info[0]}.{sys.version_info[1]}",
                                     "site-packages"), *build_native.stdlib_paths()]
        build_native.build_launcher(path, search, os.path.join(ROOT, "modules"),
                                    policy_path=self.policy)
        os.chown(path, 0, 0)
        os.chmod(path, mode)
        return path


def write_file(path: str, text: str | bytes, mode: int = 0o644) -> None:
    """Write a root-owned file with an exact mode (umask-independent)."""
    data = text.encode() if isinstance(text, str) else text
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


@pytest.fixture
def pin_env(swtpm, pamhost) -> Iterator[PinEnv]:
    """A PinEnv on a fresh swtpm; its work and pam.d directories are removed after."""
    workdir = tempfile.mkdtemp(prefix="pypam-pin-", dir="/tmp")
    os.chmod(workdir, 0o755)
    pamd = PamService()
    try:
        yield PinEnv(swtpm, workdir, pamd)
    finally:
        if swtpm.proc is not None and swtpm.proc.poll() is None:
            swtpm.resume()  # a test that paused the TPM and failed must not leave it stopped
        pamd.remove()
        shutil.rmtree(workdir, ignore_errors=True)
        assert not os.path.exists(workdir)
