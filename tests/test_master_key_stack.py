"""The documented stack (examples/pam.d) through real libpam, build/pam_pypam.so and a
real swtpm: the keyring receives the token whichever method succeeded, never the PIN
or the password, and a missing TPM never costs the login.

The stack is the example files themselves, with only the system modules swapped for
test stand-ins: pam_unix -> pam_matrix (a password database in a file, so no real
account's password is touched), pam_gnome_keyring -> tests/modules/fake_keyring.py
(stashes PAM_AUTHTOK in pamh.data during auth and uses it in open_session, like
pam_kwallet5, and records what it got), and `policy=` added to the pypam lines.
Every test runs twice: the modules reaching the TPM themselves, and through a real
pinutild (the policy names its socket).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pinutil.master_key import recovery
from tests.support.accounts import AS_NOBODY, as_user
from tests.support.agent import Agent
from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_PYPAM_SO,
    PAM_SUCCESS,
    PAM_WRAPPER_DIR,
    prompts,
    result_code,
    run_pam,
)
from tests.support.pinutild import Pinutild

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "pam.d")
TEST_MODULES = os.path.join(ROOT, "tests", "modules")
USER = "daemon"  # a real account (tpm_pin needs its uid); its real password is untouched
PIN = "7391"
PASSWORD = "correct-horse-42"
SERVICE = "login"
_MAIN_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from pinutil.cli.app import main; "
              "sys.exit(main(sys.argv[2:]))")


class Stack:
    """swtpm + policy + master key + the example stack in a private pam.d dir."""

    def __init__(self, swtpm, pam_confdir, workdir: str) -> None:
        self.swtpm = swtpm
        self.confdir = pam_confdir
        self.workdir = workdir
        self.policy = os.path.join(workdir, "policy")
        self.sealed = os.path.join(workdir, "pinpam", "sealed_master_key")
        self.record = os.path.join(workdir, "keyring.jsonl")
        with open(self.policy, "w") as f:
            f.write(f"tcti = {swtpm.tcti}\nmaster_key_file = {self.sealed}\n"
                    f"master_key_auth_file = {workdir}/pinutild/master_key_auth\n"
                    f"state_dir = {workdir}\nhelper_timeout = 1\n")
        os.chmod(self.policy, 0o644)
        passdb = os.path.join(workdir, "passdb")
        with open(passdb, "w") as f:
            f.write(f"{USER}:{PASSWORD}:{SERVICE}\n")
        self.install(passdb)

    def install(self, passdb: str) -> None:
        swaps = [
            (r"pam_pypam\.so module=(\w+)",
             rf"{PAM_PYPAM_SO} module=\1 policy={self.policy}"),
            (r"pam_unix\.so try_first_pass",
             f"{PAM_WRAPPER_DIR}/pam_matrix.so passdb={passdb}"),
            (r"^(auth|session)(\s+)optional(\s+)pam_gnome_keyring\.so.*$",
             (rf"\1\2optional\3{PAM_PYPAM_SO} module=fake_keyring "
              rf"moduledir={TEST_MODULES} record={self.record}")),
            (r"^auth\s+requisite\s+pam_nologin\.so\s*$", ""),  # the host's /etc/nologin
            (r"^\w+\s+include\s+common-\w+\s*$", ""),  # the host's real stacks
            # libpam 1.5.2 looks up a relative substack in /etc/pam.d even under
            # pam_start_confdir: name the private copy by its absolute path
            (r"substack(\s+)pypam-decide", rf"substack\1{self.confdir.path}/pypam-decide"),
        ]
        for name in ("pypam-decide", "login"):
            lines = []
            for line in Path(EXAMPLES, name).read_text().splitlines():
                line = line.split("#", 1)[0].rstrip()
                for pattern, replacement in swaps:
                    line = re.sub(pattern, replacement, line)
                if line.strip():
                    lines.append(line)
            self.confdir.write(name, "\n".join(lines))
        text = Path(self.confdir.path, "login").read_text()
        assert f"auth substack {self.confdir.path}/pypam-decide" in " ".join(text.split())
        decide = Path(self.confdir.path, "pypam-decide").read_text()
        assert "module=master_key" in decide and "module=fake_keyring" in text

    def pinutil(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-I", "-c", _MAIN_CODE, ROOT, "--policy", self.policy, *args],
            input=stdin.encode(), capture_output=True, env={"PATH": "/usr/bin:/bin"},
            timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result

    def init_master_key(self) -> bytes:
        """Create the master key; return the secret (recovered with the phrase)."""
        out = self.pinutil("--yes", "--json", "master-key", "init").stdout
        phrase = json.loads(out)["recovery_phrase"]
        return recovery.unseal(recovery.read_sealed_file(self.sealed), phrase)

    def login(self, answers: list[str], stages=("auth", "open"), **kwargs) -> dict:
        if os.path.exists(self.record):
            os.unlink(self.record)
        return run_pam(self.confdir, SERVICE, user=USER, stages=stages, answers=answers,
                       **kwargs)

    def without_master_key(self, answers: list[str]) -> str | None:
        """What the keyring gets from the same login with master_key replaced by a
        do-nothing line (the same number of lines: the decide file's jumps count them)."""
        path = os.path.join(self.confdir.path, "pypam-decide")
        original = Path(path).read_text()
        stripped = "\n".join("auth optional pam_permit.so" if "module=master_key" in line
                             else line for line in original.splitlines())
        self.confdir.write("pypam-decide", stripped)
        try:
            report = self.login(answers, stages=("auth",))
            assert result_code(report, "auth") == PAM_SUCCESS
            return self.keyring()["auth"]
        finally:
            self.confdir.write("pypam-decide", original)

    def keyring(self) -> dict[str, str | None]:
        """What the stand-in keyring received, per stage."""
        if not os.path.exists(self.record):
            return {}
        lines = Path(self.record).read_text().splitlines()
        return {entry["stage"]: entry["authtok"] for entry in map(json.loads, lines)}


def token_for(secret: bytes, user: str) -> str:
    return hmac.new(secret, user.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(params=["direct", "daemon"])
def stack(request, swtpm, pam_confdir):
    """The stack with the TPM reached by the modules themselves, or through a real
    pinutild (its socket named by the policy: tpm_pin's and master_key's `auto`)."""
    if not os.path.exists(PAM_PYPAM_SO):
        pytest.fail("build/pam_pypam.so is not built (make build)")
    workdir = tempfile.mkdtemp(prefix="pypam-stack-", dir="/tmp")
    os.chmod(workdir, 0o755)
    service = None
    try:
        built = Stack(swtpm, pam_confdir, workdir)
        socket_path = os.path.join(workdir, "pinutild.sock")
        if request.param == "daemon":
            service = Pinutild(built.policy, socket_path)
            service.start()
        with open(built.policy, "a") as f:  # absent for "direct": no machine's service
            f.write(f"service_socket = {socket_path}\n")
        yield built
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_pin_login_gives_the_keyring_the_token(stack):
    secret = stack.init_master_key()
    stack.pinutil("--stdin", "setup", USER, stdin=PIN + "\n")
    report = stack.login([PIN])
    assert result_code(report, "auth") == PAM_SUCCESS
    assert result_code(report, "open") == PAM_SUCCESS
    assert prompts(report) == ["PIN: "]
    expected = token_for(secret, USER)
    assert stack.keyring() == {"auth": expected, "open_session": expected}


def test_password_login_gives_the_keyring_the_token(stack):
    secret = stack.init_master_key()
    # no PIN enrolled: tpm_pin steps aside, the password decides
    report = stack.login([PASSWORD])
    assert result_code(report, "auth") == PAM_SUCCESS
    assert result_code(report, "open") == PAM_SUCCESS
    expected = token_for(secret, USER)
    assert stack.keyring() == {"auth": expected, "open_session": expected}


def test_password_typed_at_the_pin_prompt_gives_the_keyring_the_token(stack):
    secret = stack.init_master_key()
    stack.pinutil("--stdin", "setup", USER, stdin=PIN + "\n")
    # not a valid PIN: no TPM attempt spent, then the password prompt
    report = stack.login([PASSWORD, PASSWORD])
    assert result_code(report, "auth") == PAM_SUCCESS
    got = stack.keyring()
    assert got == {"auth": token_for(secret, USER), "open_session": token_for(secret, USER)}
    assert PASSWORD not in got.values() and PIN not in got.values()
    assert stack.swtpm.read_pin_counter(0x01000000 + 1)[0] == 0


def test_without_a_tpm_login_still_succeeds_and_the_keyring_gets_no_token(stack):
    secret = stack.init_master_key()
    stack.swtpm.stop()
    report = stack.login([PASSWORD, PASSWORD, PASSWORD])
    assert result_code(report, "auth") == PAM_SUCCESS
    assert result_code(report, "open") == PAM_SUCCESS
    got = stack.keyring()
    assert token_for(secret, USER) not in got.values()
    # master_key left PAM_AUTHTOK alone: the keyring sees whatever the password module
    # left there (pam_unix: the password; the pam_matrix stand-in: an empty string)
    assert got["auth"] == got["open_session"] == stack.without_master_key([PASSWORD])


def test_a_hung_tpm_delays_login_by_the_timeouts_only_and_gives_no_token(stack):
    secret = stack.init_master_key()
    stack.pinutil("--stdin", "setup", USER, stdin=PIN + "\n")
    stack.swtpm.pause()
    try:
        started = time.monotonic()
        report = stack.login([PASSWORD], stages=("auth",))
        elapsed = time.monotonic() - started
    finally:
        stack.swtpm.resume()
    assert result_code(report, "auth") == PAM_SUCCESS  # the password still decides
    # tpm_pin's status and master_key's token each wait helper_timeout (1 s) at most
    assert elapsed < 2 * 1 + 3, elapsed
    assert token_for(secret, USER) not in stack.keyring().values()


def test_without_a_master_key_the_keyring_gets_no_token(stack):
    report = stack.login([PASSWORD])
    assert result_code(report, "auth") == PAM_SUCCESS
    got = stack.keyring()
    assert got["auth"] == stack.without_master_key([PASSWORD])  # untouched
    assert not re.fullmatch(r"[0-9a-f]{64}", got["auth"] or "")


def test_a_failed_login_never_hands_the_keyring_the_token(stack):
    secret = stack.init_master_key()
    stack.pinutil("--stdin", "setup", USER, stdin=PIN + "\n")
    # an application opens no session after a failed pam_authenticate
    report = stack.login(["0000", "wrong-password"], stages=("auth",))
    assert result_code(report, "auth") == PAM_AUTH_ERR
    got = stack.keyring()
    # Substack semantics: the keyring line after the substack still runs after a
    # failure, but master_key sits inside the substack behind the decision, so the
    # keyring sees at most the wrong password just typed: never the token, never the PIN.
    assert "auth" in got  # the keyring line did run
    assert got["auth"] not in (token_for(secret, USER), PIN, "0000")


AS_USER = tuple(as_user(USER))


@pytest.mark.parametrize(("agent_as", "gets_the_token"), [
    (AS_NOBODY, False), (AS_USER, True), ((), True)], ids=["another-uid", "the-user", "root"])
def test_a_root_host_acting_for_another_uid_gives_no_token(stack, agent_as, gets_the_token):
    """A root host with a client's connection on its stdin (polkit 127's
    socket-activated agent helper: pinutil/service/requester.py) acts for that
    client: its user's own login gets the token, another uid's request for USER never
    does, even with USER's password (review F11 for master_key: on the old code the
    keyring module after it got USER's token for any client)."""
    secret = stack.init_master_key()
    agent = Agent(agent_as)
    try:
        report = stack.login([PASSWORD], stages=("auth",),
                             preexec=lambda: os.dup2(agent.conn.fileno(), 0))
    finally:
        agent.close()
    assert result_code(report, "auth") == PAM_SUCCESS  # the password decides, as before
    assert (stack.keyring()["auth"] == token_for(secret, USER)) is gets_the_token


# --- the module alone, with a stand-in handle: PAM_IGNORE on every path ---------------

class FakeHandle:
    """Just what modules/master_key.py touches of a PamHandle."""

    def __init__(self, user: str | None, authtok: str | None = "typed") -> None:
        self.user = user
        self.authtok = authtok
        self.debug = False
        self.logged: list[tuple[int, str]] = []
        self.shared: dict[str, dict] = {}

    def syslog(self, priority: int, message: str) -> None:
        self.logged.append((priority, message))

    def shared_data(self, name: str) -> dict:
        return self.shared.setdefault(name, {})


def _load_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "master_key_module", os.path.join(ROOT, "modules", "master_key.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def module_env(swtpm):
    workdir = tempfile.mkdtemp(prefix="pypam-mkmod-", dir="/tmp")
    policy = os.path.join(workdir, "policy")
    with open(policy, "w") as f:
        f.write(f"tcti = {swtpm.tcti}\nmaster_key_file = {workdir}/sealed\n"
                f"master_key_auth_file = {workdir}/pinutild/master_key_auth\n"
                f"state_dir = {workdir}\n")
    os.chmod(policy, 0o644)
    try:
        yield _load_module(), policy, swtpm
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_module_returns_ignore_on_every_path_and_never_logs_the_token(module_env):
    import pypam
    from pinutil.master_key.lifecycle import MasterKeyAdmin

    module, policy, swtpm = module_env
    cases = [
        ("no key", FakeHandle("alice"), [f"policy={policy}"]),
        ("no user", FakeHandle(None), [f"policy={policy}"]),
        ("relative policy", FakeHandle("alice"), ["policy=etc/policy"]),
        ("missing policy dir", FakeHandle("alice"), ["policy=/nonexistent/dir/policy"]),
    ]
    for label, pamh, args in cases:
        assert module.authenticate(pamh, 0, args) == pypam.PAM_IGNORE, label
        assert pamh.authtok == "typed", label
    secret = os.urandom(32)
    from pinutil.tpm.context import Tpm

    with Tpm(swtpm.tcti) as tpm:
        MasterKeyAdmin(tpm).load_secret(secret)
    pamh = FakeHandle("alice")
    pamh.debug = True  # what pypam derives from the `debug` argument
    assert module.authenticate(pamh, 0, [f"policy={policy}", "debug", "bogus=1"]) \
        == pypam.PAM_IGNORE
    assert pamh.authtok == token_for(secret, "alice")
    assert any("unknown argument" in message and "bogus" in message
               for _, message in pamh.logged)
    assert any("token set" in message for _, message in pamh.logged)  # debug
    assert not any(pamh.authtok in message for _, message in pamh.logged)
    swtpm.stop()
    pamh = FakeHandle("alice")
    assert module.authenticate(pamh, 0, [f"policy={policy}"]) == pypam.PAM_IGNORE
    assert pamh.authtok == "typed"
    assert any("token not set" in message for _, message in pamh.logged)
    assert module.setcred(pamh, 0, []) == pypam.PAM_IGNORE


def test_module_survives_a_handle_that_raises(module_env):
    import pypam

    module, policy, _ = module_env

    class Broken(FakeHandle):
        @property
        def user(self):
            raise RuntimeError("boom")

        @user.setter
        def user(self, value):
            pass

        def syslog(self, priority, message):
            raise OSError("syslog gone")

    assert module.authenticate(Broken("x"), 0, [f"policy={policy}"]) == pypam.PAM_IGNORE
