"""The `pinutil` command end to end, in subprocesses, against a real swtpm.

Root runs use `python -m pinutil --policy P`. Non-root runs drop to `nobody` with
setpriv and call `pinutil.cli.app.main(argv, policy_path=P)`: the policy seam is a keyword
argument of main(), which the installed launcher fixes at build time and a caller of
the installed command cannot reach (a non-root `--policy` is refused, and there is no
environment variable). In those runs nobody can reach the swtpm socket, like a caller
of the setgid-tss command can reach /dev/tpmrm0: a refusal must come from the rules,
not from a TPM that is out of reach.

After every step the TPM's own counter is read out of band with tpm2-tools.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support.accounts import AS_NOBODY
from tests.support.terminal import answer_on_terminal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NV_BASE = 0x01000000
ROOT_UID = 0
NOBODY = pwd.getpwnam("nobody")
OTHER = pwd.getpwnam("daemon")  # a third user that is neither root nor the caller
PIN = "7391"
PIN2 = "582046"
TIMEOUT = 60

_AS_NOBODY_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); from pinutil.cli.app import main; "
    "sys.exit(main(sys.argv[4:], policy_path=sys.argv[2], pam_confdir=sys.argv[3]))"
)
# The password proof of a non-root setup is tested in tests/test_enrolment_proof.py
# with the real pam_unix; here a `pinutil` service of pam_permit stands in for it.
_PERMIT_SERVICE = "auth required pam_permit.so\naccount required pam_permit.so\n"
# -E -s (not -I): `-m` must find the package in the working directory, ROOT.
PINUTIL = [sys.executable, "-E", "-s", "-m", "pinutil"]


def handle(uid: int) -> int:
    return NV_BASE + uid


class Cli:
    """Runs pinutil against one swtpm with one policy file."""

    def __init__(self, swtpm, policy_dir: str) -> None:
        self.swtpm = swtpm
        self.policy_dir = policy_dir
        self.policy = os.path.join(policy_dir, "policy")
        # Enrolment records: root:nogroup 0770, as the installed root:tss 0770 is for
        # the set-gid-tss command (nobody runs with gid nogroup here).
        self.enrolment_dir = os.path.join(policy_dir, "enrolments")
        os.mkdir(self.enrolment_dir)
        os.chown(self.enrolment_dir, 0, grp.getgrnam("nogroup").gr_gid)
        os.chmod(self.enrolment_dir, 0o770)
        self.pam_confdir = os.path.join(policy_dir, "pam.d")
        os.mkdir(self.pam_confdir)
        with open(os.path.join(self.pam_confdir, "pinutil"), "w") as f:
            f.write(_PERMIT_SERVICE)
        os.chmod(self.pam_confdir, 0o755)
        self.write_policy()

    def write_policy(self, extra: str = "", tcti: str | None = None) -> None:
        with open(self.policy, "w") as f:
            f.write(f"tcti = {tcti or self.swtpm.tcti}\nstate_dir = {self.policy_dir}\n"
                    f"{extra}")
        os.chmod(self.policy, 0o644)

    def _env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "TSS2_LOG": "all+NONE"}

    def run(self, *args: str, stdin: bytes | str | None = b"", as_nobody: bool = False,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        if isinstance(stdin, str):
            stdin = stdin.encode()
        if as_nobody:
            cmd = [*AS_NOBODY, sys.executable, "-I", "-c", _AS_NOBODY_CODE, ROOT,
                   self.policy, self.pam_confdir, *args]
        else:
            cmd = [*PINUTIL, "--policy", self.policy, *args]
        return subprocess.run(cmd, input=stdin, check=False, capture_output=True, cwd=ROOT,
                              env=self._env(), timeout=timeout, start_new_session=True)

    def json(self, *args: str, **kw) -> tuple[int, dict]:
        """Run with --json; return (exit code, the one JSON object on stdout)."""
        result = self.run("--json", *args, **kw)
        return result.returncode, one_json(result)

    def enrol(self, user: str, pin: str = PIN) -> None:
        code, out = self.json("--stdin", "setup", user, stdin=pin + "\n")
        assert (code, out["result"]) == (0, "success"), out

    def counter(self, uid: int) -> tuple[int, int]:
        return self.swtpm.read_pin_counter(handle(uid))

    def handles(self) -> list[int]:
        return self.swtpm.nv_handles()


def one_json(result: subprocess.CompletedProcess) -> dict:
    out = result.stdout.decode()
    assert out.endswith("\n") and out.count("\n") == 1, (out, result.stderr)
    return json.loads(out)


def assert_no_secret(result: subprocess.CompletedProcess, *secrets: str) -> None:
    for secret in secrets:
        assert secret.encode() not in result.stdout
        assert secret.encode() not in result.stderr


@pytest.fixture
def cli(swtpm):
    # nobody must reach the sockets (see the module docstring; swtpm made them 0666,
    # tcti-swtpm uses the control socket too) and read the policy.
    os.chmod(swtpm.state_dir, 0o711)
    policy_dir = tempfile.mkdtemp(prefix="pinutil-cli-", dir="/tmp")
    os.chmod(policy_dir, 0o755)
    try:
        cli = Cli(swtpm, policy_dir)
        # The installation step: root records the salt key that PIN checks trust.
        assert cli.run("salt-key", "record").returncode == 0
        yield cli
    finally:
        shutil.rmtree(policy_dir)


# --- happy paths ----------------------------------------------------------------------

def test_setup_status_test_change_delete_as_root(cli):
    code, out = cli.json("status", "root")
    assert code == 0
    # root's warnings depend on the machine (tests/test_tpm_reach.py checks them)
    assert isinstance(out.pop("tpm_reachable_past_pinutild"), list)
    assert out == {"command": "status", "user": "root", "result": "success",
                   "enrolled": False, "failures": None, "limit": None, "locked": False,
                   "attempts_left": None,
                   "owner_hierarchy": {"file": "/etc/pinpam/owner-auth", "protected": False,
                                       "lockout_protected": False, "password": "none",
                                       "platform_open": True}}  # swtpm's

    result = cli.run("--json", "--stdin", "setup", stdin=PIN + "\n")
    assert result.returncode == 0, result.stderr
    answer = one_json(result)
    assert answer.pop("owner_warning").startswith("the TPM's owner hierarchy is not protected")
    assert answer == {"command": "setup", "user": "root", "result": "success",
                      "limit": 5, "salt_key": "ours", "owner_unprotected": True}
    assert_no_secret(result, PIN)
    assert cli.counter(ROOT_UID) == (0, 5)

    code, out = cli.json("status")
    assert code == 0
    assert (out["enrolled"], out["failures"], out["limit"], out["locked"],
            out["attempts_left"]) == (True, 0, 5, False, 5)

    result = cli.run("--stdin", "test", stdin=PIN + "\n")  # JSON even without --json
    assert result.returncode == 0, result.stderr
    assert one_json(result) == {"command": "test", "user": "root", "result": "success",
                                "attempts_left": 5}
    assert_no_secret(result, PIN)

    result = cli.run("--json", "--stdin", "change", stdin=PIN2 + "\n")  # root: no old PIN
    assert result.returncode == 0, result.stderr
    assert one_json(result)["result"] == "success"
    assert_no_secret(result, PIN, PIN2)
    assert cli.counter(ROOT_UID) == (0, 5)
    assert cli.run("--stdin", "test", stdin=PIN2 + "\n").returncode == 0
    assert cli.run("--stdin", "test", stdin=PIN + "\n").returncode == 7
    assert cli.counter(ROOT_UID) == (1, 5)

    code, out = cli.json("--yes", "delete")
    assert (code, out["result"]) == (0, "success")
    assert handle(ROOT_UID) not in cli.handles()
    code, out = cli.json("status")
    assert (code, out["enrolled"]) == (0, False)


def test_human_output_is_one_line_and_options_may_follow_the_command(cli):
    cli.enrol("root")
    result = cli.run("status")
    assert result.returncode == 0
    assert re.fullmatch(r"root: PIN enrolled, 0 of 5 attempts failed, 5 attempts left; "
                        r"enrolled for root \(uid 0\) on \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; "
                        r"owner hierarchy not protected \(`pinutil owner protect`\)\n",
                        result.stdout.decode())
    code, out = cli.json("status", "--json")  # after the command, too
    assert code == 0 and out["enrolled"] is True


def test_setup_twice_is_already_enrolled(cli):
    cli.enrol("root")
    code, out = cli.json("--stdin", "setup", stdin=PIN2 + "\n")
    assert (code, out["result"]) == (12, "already_enrolled")
    assert cli.run("--stdin", "test", stdin=PIN + "\n").returncode == 0  # unchanged


def test_policy_limit_is_used_at_setup(cli):
    cli.write_policy("pin_lockout_max_attempts = 3\n")
    cli.enrol("root")
    assert cli.counter(ROOT_UID) == (0, 3)


def test_setup_for_another_user_by_root_and_by_uid(cli):
    cli.enrol(str(OTHER.pw_uid))  # a decimal uid names the user
    assert cli.counter(OTHER.pw_uid) == (0, 5)
    code, out = cli.json("status", OTHER.pw_name)
    assert (code, out["user"], out["enrolled"]) == (0, OTHER.pw_name, True)


# --- wrong PIN, counter, lockout ----------------------------------------------------

def test_wrong_pins_exit_7_and_the_tpm_counter_equals_the_failures(cli):
    cli.enrol("root")
    for failures in (1, 2, 3):
        result = cli.run("--stdin", "test", stdin="0000\n")
        assert result.returncode == 7
        out = one_json(result)
        assert (out["result"], out["attempts_left"]) == ("wrong_pin", 5 - failures)
        assert cli.counter(ROOT_UID) == (failures, 5)
        _, st = cli.json("status")
        assert (st["failures"], st["attempts_left"]) == (failures, 5 - failures)
        assert b"Incorrect PIN" in result.stderr
    assert cli.run("--stdin", "test", stdin=PIN + "\n").returncode == 0
    assert cli.counter(ROOT_UID) == (0, 5)  # a success resets the count


def test_lockout_exits_11_even_with_the_right_pin(cli):
    cli.write_policy("pin_lockout_max_attempts = 2\n")
    cli.enrol("root")
    assert cli.run("--stdin", "test", stdin="0000\n").returncode == 7
    result = cli.run("--stdin", "test", stdin="0001\n")
    assert result.returncode == 7, result.stderr  # the last wrong PIN; the lock shows next
    assert cli.counter(ROOT_UID) == (2, 2)
    for pin in (PIN, "0002"):
        result = cli.run("--stdin", "test", stdin=pin + "\n")
        assert result.returncode == 11, result.stderr
        out = one_json(result)
        assert (out["result"], out["attempts_left"]) == ("locked", 0)
    assert cli.counter(ROOT_UID) == (2, 2)
    _, st = cli.json("status")
    assert (st["locked"], st["attempts_left"]) == (True, 0)
    # root resets a locked PIN with change (no old PIN needed)
    assert cli.run("--stdin", "change", stdin=PIN2 + "\n").returncode == 0
    assert cli.counter(ROOT_UID) == (0, 2)
    assert cli.run("--stdin", "test", stdin=PIN2 + "\n").returncode == 0


def test_test_on_a_user_without_a_pin_is_9(cli):
    result = cli.run("--stdin", "test", stdin=PIN + "\n")
    assert result.returncode == 9
    assert one_json(result)["result"] == "not_enrolled"
    assert handle(ROOT_UID) not in cli.handles()


def test_change_and_delete_of_a_user_without_a_pin_is_9(cli):
    assert cli.run("--stdin", "change", stdin=PIN + "\n").returncode == 9
    assert cli.run("--yes", "delete").returncode == 9


# --- invalid PINs: refused before the TPM -------------------------------------------

INVALID_PINS = [
    pytest.param(b"\n", id="empty"),
    pytest.param(b"123\n", id="short"),
    pytest.param(b"123456789\n", id="long"),
    pytest.param(b"12a4\n", id="letters"),
    pytest.param("\u0663\u0663\u0663\u0663\n".encode(), id="arabic-indic-digits"),
    pytest.param("\uff11\uff12\uff13\uff14\n".encode(), id="fullwidth-digits"),
    pytest.param(b"12 34\n", id="space"),
    pytest.param(b" 7391\n", id="leading-space"),
    pytest.param(b"7391\r\n", id="crlf"),
    pytest.param(b"7391\t\n", id="tab"),
    pytest.param(b"73\x0091\n", id="nul"),
    pytest.param(b"\xff\xfe73\n", id="invalid-utf8"),
    pytest.param(b"%s%n%x\n", id="format-string"),
    pytest.param(b"1" * 512 + b"\n", id="512B"),
    pytest.param(b"1" * 4096 + b"\n", id="4KB"),
    pytest.param(b"1" * (1 << 20), id="1MB-no-newline"),
]


@pytest.mark.parametrize("stdin", INVALID_PINS)
def test_invalid_pin_on_test_spends_nothing(cli, stdin):
    cli.enrol("root")
    cli.run("--stdin", "test", stdin="0000\n")  # one real failure: the count is 1
    assert cli.counter(ROOT_UID) == (1, 5)
    result = cli.run("--stdin", "test", stdin=stdin)
    assert result.returncode == 7, result.stderr
    out = one_json(result)
    assert (out["result"], out["attempts_left"]) == ("invalid_pin", None)
    assert cli.counter(ROOT_UID) == (1, 5)
    assert len(result.stderr.splitlines()) == 1
    if len(stdin.strip()) >= 3:
        assert stdin.strip()[:64] not in result.stdout + result.stderr


@pytest.mark.parametrize("stdin", INVALID_PINS)
def test_invalid_pin_on_setup_defines_nothing(cli, stdin):
    before = cli.handles()
    result = cli.run("--json", "--stdin", "setup", stdin=stdin)
    assert result.returncode == 7
    assert one_json(result)["result"] == "invalid_pin"
    assert cli.handles() == before


def test_invalid_pins_never_reach_a_hung_tpm(cli):
    """With the TPM stopped (SIGSTOP) any TPM command would hang; an invalid PIN must
    come back at once: it was refused before the TPM was asked anything."""
    cli.enrol("root")
    cli.swtpm.pause()
    try:
        for args, stdin in ((("test",), b"12a4\n"), (("setup", OTHER.pw_name), b"1\n"),
                            (("change",), b"abcd\n"), (("test",), b"1" * 4096 + b"\n")):
            started = time.monotonic()
            result = cli.run("--stdin", *args, stdin=stdin, timeout=20)
            assert result.returncode == 7, (args, result.stderr)
            assert time.monotonic() - started < 10
    finally:
        cli.swtpm.resume()
    assert cli.counter(ROOT_UID) == (0, 5)


def test_pin_charset_any_accepts_letters(cli):
    cli.write_policy("pin_charset = any\npin_max_length = 12\n")
    cli.enrol("root", "Pa$$w0rd!")
    assert cli.run("--stdin", "test", stdin="Pa$$w0rd!\n").returncode == 0
    assert cli.run("--stdin", "test", stdin="Pa$$ w0rd\n").returncode == 7
    assert cli.counter(ROOT_UID) == (0, 5)


def test_change_validates_both_pins_before_the_tpm(cli):
    cli.enrol(NOBODY.pw_name)
    # as nobody: old PIN fine, new PIN invalid -> nothing spent, PIN unchanged
    result = cli.run("--stdin", "change", stdin=f"{PIN}\n12\n", as_nobody=True)
    assert result.returncode == 7
    assert cli.counter(NOBODY.pw_uid) == (0, 5)
    assert cli.run("--stdin", "test", NOBODY.pw_name, stdin=PIN + "\n").returncode == 0


# --- the caller's own PIN as an unprivileged user --------------------------------------

def test_nobody_manages_its_own_pin(cli):
    result = cli.run("--json", "--stdin", "setup", stdin=PIN + "\n", as_nobody=True)
    assert result.returncode == 0, result.stderr
    assert one_json(result)["user"] == "nobody"
    assert cli.counter(NOBODY.pw_uid) == (0, 5)

    assert cli.run("--stdin", "test", stdin=PIN + "\n", as_nobody=True).returncode == 0
    result = cli.run("--stdin", "test", stdin="0000\n", as_nobody=True)
    assert result.returncode == 7 and cli.counter(NOBODY.pw_uid) == (1, 5)
    code, st = cli.json("status", as_nobody=True)
    assert (code, st["user"], st["failures"]) == (0, "nobody", 1)

    # change needs the old PIN: a wrong old PIN is a counted failure, nothing changes
    result = cli.run("--stdin", "change", stdin=f"0000\n{PIN2}\n", as_nobody=True)
    assert result.returncode == 7
    assert cli.counter(NOBODY.pw_uid) == (2, 5)
    assert cli.run("--stdin", "test", stdin=PIN + "\n", as_nobody=True).returncode == 0
    # with only one line (no new PIN) nothing happens either
    assert cli.run("--stdin", "change", stdin=f"{PIN}\n", as_nobody=True).returncode == 5
    result = cli.run("--stdin", "change", stdin=f"{PIN}\n{PIN2}\n", as_nobody=True)
    assert result.returncode == 0, result.stderr
    assert cli.run("--stdin", "test", stdin=PIN2 + "\n", as_nobody=True).returncode == 0

    # delete needs the PIN; root's --yes means nothing here
    result = cli.run("--yes", "--stdin", "delete", stdin="0000\n", as_nobody=True)
    assert result.returncode == 7
    assert handle(NOBODY.pw_uid) in cli.handles()
    result = cli.run("--stdin", "delete", stdin=PIN2 + "\n", as_nobody=True)
    assert result.returncode == 0, result.stderr
    assert handle(NOBODY.pw_uid) not in cli.handles()


# --- cross-user refusals -----------------------------------------------------------------

CROSS_USER = [
    ("test", "0000\n"), ("change", f"{PIN}\n{PIN2}\n"), ("delete", f"{PIN}\n"),
    ("setup", f"{PIN2}\n"), ("status", ""),
]


@pytest.mark.parametrize("target", ["root", "0", OTHER.pw_name, str(OTHER.pw_uid)])
@pytest.mark.parametrize("command, stdin", CROSS_USER, ids=[c for c, _ in CROSS_USER])
def test_nobody_is_refused_on_other_users(cli, command, stdin, target):
    cli.enrol("root")
    cli.enrol(OTHER.pw_name)
    before = cli.handles()
    # control: nobody can reach this TPM, so a refusal below is the rules' doing
    assert cli.json("status", as_nobody=True)[0] == 0
    for _ in range(3):  # more tries than needed to lock a limit-2 PIN, just in case
        result = cli.run("--stdin", "--yes", command, target, stdin=stdin, as_nobody=True)
        assert result.returncode == 6, result.stderr
        out_line = result.stdout.decode()
        if command == "test":  # test prints its JSON line even without --json
            assert json.loads(out_line)["result"] == "permission_denied"
        assert b"only root may" in result.stderr
    assert cli.counter(ROOT_UID) == (0, 5)
    assert cli.counter(OTHER.pw_uid) == (0, 5)
    assert cli.handles() == before


def test_refusal_comes_before_any_tpm_command(cli):
    """With the TPM hung, a refused cross-user command still returns at once."""
    cli.enrol("root")
    cli.swtpm.pause()
    try:
        for command, stdin in CROSS_USER:
            started = time.monotonic()
            result = cli.run("--stdin", "--yes", command, "root", stdin=stdin,
                             as_nobody=True, timeout=20)
            assert result.returncode == 6, (command, result.stderr)
            assert time.monotonic() - started < 10
    finally:
        cli.swtpm.resume()
    assert cli.counter(ROOT_UID) == (0, 5)


def test_nobody_may_not_choose_the_policy(cli):
    cli.enrol("root")
    for args in (("--policy", cli.policy, "status"), ("status", "--policy", cli.policy),
                 ("--policy", cli.policy, "--stdin", "test", "root")):
        result = cli.run("--json", *args, stdin="0000\n", as_nobody=True)
        assert result.returncode == 6, result.stderr
        assert one_json(result)["result"] == "permission_denied"
        assert b"only root may use --policy" in result.stderr
    assert cli.counter(ROOT_UID) == (0, 5)


def test_environment_does_not_name_the_caller(cli):
    cli.enrol("root")
    cmd = [*AS_NOBODY, "env", "USER=root", "LOGNAME=root", "SUDO_UID=0", "HOME=/root",
           sys.executable, "-I", "-c", _AS_NOBODY_CODE, ROOT, cli.policy, cli.pam_confdir,
           "--stdin", "test"]
    result = subprocess.run(cmd, input=b"0000\n", check=False, capture_output=True,
                            timeout=TIMEOUT,
                            env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
    out = one_json(result)
    assert out["user"] == "nobody" and out["result"] == "not_enrolled"
    assert result.returncode == 9
    assert cli.counter(ROOT_UID) == (0, 5)


# --- delete confirmation ----------------------------------------------------------------

def test_root_delete_asks_and_no_keeps_the_pin(cli):
    cli.enrol("root")
    for answer in ("n\n", "\n", "yes please\n", ""):
        result = cli.run("--json", "--stdin", "delete", stdin=answer)
        assert result.returncode == 5, result.stderr
        assert one_json(result)["result"] == "cancelled"
        assert handle(ROOT_UID) in cli.handles()
    result = cli.run("--stdin", "delete", stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert handle(ROOT_UID) not in cli.handles()


def test_no_terminal_and_no_stdin_flag_is_cancelled(cli):
    cli.enrol("root")
    # start_new_session: no controlling terminal, so /dev/tty cannot be opened; the PIN
    # on stdin must not be read without --stdin.
    result = cli.run("test", stdin=PIN + "\n")
    assert result.returncode == 5
    assert one_json(result)["result"] == "cancelled"
    assert b"use --stdin" in result.stderr


# --- errors that are not about PINs -------------------------------------------------------

def test_tpm_unreachable_is_9(cli):
    cli.write_policy(tcti="swtpm:path=/nonexistent/sock")
    code, out = cli.json("status")
    assert (code, out["result"]) == (9, "tpm_unavailable")
    result = cli.run("--stdin", "test", stdin=PIN + "\n")
    assert result.returncode == 9 and one_json(result)["result"] == "tpm_unavailable"


@pytest.mark.parametrize("content, mode, needle", [
    ("pin_min_length = x\n", 0o644, b"line 3: bad value for pin_min_length"),
    ("bogus = 1\n", 0o644, b"line 3: unknown key 'bogus'"),
    ("pin_min_length = 4\n", 0o666, b"writable by group or others"),
])
def test_bad_policy_is_3_and_never_defaults(cli, content, mode, needle):
    cli.write_policy(content)
    os.chmod(cli.policy, mode)
    for args, stdin in ((("status",), ""), (("--stdin", "test"), PIN + "\n"),
                        (("--stdin", "setup"), PIN + "\n")):
        result = cli.run("--json", *args, stdin=stdin)
        assert result.returncode == 3, result.stderr
        out = one_json(result)
        assert out["result"] == "policy_error"
        assert needle in result.stderr and cli.policy.encode() in result.stderr
    assert handle(ROOT_UID) not in cli.handles()


def test_symlinked_policy_is_3(cli):
    link = os.path.join(cli.policy_dir, "link")
    os.symlink(cli.policy, link)
    result = subprocess.run([*PINUTIL, "--policy", link, "status"], check=False,
                            capture_output=True, cwd=ROOT, timeout=TIMEOUT)
    assert result.returncode == 3
    assert b"symbolic link" in result.stderr


def test_usage_and_unknown_user(cli):
    assert cli.run("frobnicate").returncode == 2
    assert cli.run("status", "a", "b").returncode == 2
    assert cli.run().returncode == 2
    code, out = cli.json("status", "no-such-user-xyz")
    assert (code, out["result"], out["user"]) == (10, "unknown_user", "no-such-user-xyz")
    result = cli.run("--stdin", "test", "no-such-user-xyz", stdin=PIN + "\n")
    assert result.returncode == 10


def test_help_exits_0():
    result = subprocess.run([*PINUTIL, "--help"],
                            check=False, capture_output=True, cwd=ROOT, timeout=TIMEOUT)
    assert result.returncode == 0 and b"setup" in result.stdout


# --- interactive use on a terminal ------------------------------------------------------

def _run_on_pty(cli, args: list[str], answers: list[str]) -> tuple[int, bytes]:
    """pinutil with a pseudo-terminal as its controlling tty: (exit code, what it showed)."""
    return answer_on_terminal([*PINUTIL, "--policy", cli.policy, *args], answers,
                              {"PATH": "/usr/bin:/bin", "TSS2_LOG": "all+NONE"}, cwd=ROOT,
                              timeout=TIMEOUT)


def test_interactive_setup_asks_twice_without_echo(cli):
    code, shown = _run_on_pty(cli, ["setup"], [PIN, PIN])
    assert code == 0, shown
    assert b"New PIN:" in shown and b"Repeat the PIN:" in shown
    assert PIN.encode() not in shown  # echo was off
    assert cli.counter(ROOT_UID) == (0, 5)
    code, shown = _run_on_pty(cli, ["test"], [PIN])
    assert code == 0, shown


def test_interactive_setup_with_different_entries_enrols_nothing(cli):
    code, shown = _run_on_pty(cli, ["setup"], [PIN, PIN2])
    assert code == 7, shown
    assert b"differ" in shown
    assert handle(ROOT_UID) not in cli.handles()


# --- the installed shape: the setgid-tss launcher -------------------------------------

LAUNCHER = os.path.join(ROOT, "build", "pinutil")


@pytest.fixture
def setgid_launcher():
    """A temporary setgid-tss copy of build/pinutil (`make build` makes it)."""
    assert os.path.isfile(LAUNCHER), "build/pinutil missing: run `make build`"
    tmp = tempfile.mkdtemp(prefix="pinutil-sgid-", dir="/tmp")
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "pinutil")
    shutil.copy(LAUNCHER, path)
    os.chown(path, 0, grp_tss())
    os.chmod(path, 0o2755)
    try:
        yield path
    finally:
        shutil.rmtree(tmp)


def grp_tss() -> int:
    return grp.getgrnam("tss").gr_gid


def test_setgid_launcher_refuses_cross_user_and_policy(setgid_launcher):
    trap = os.path.join(os.path.dirname(setgid_launcher), "tss.log")
    hostile = {"PATH": "/usr/bin:/bin", "USER": "root", "SUDO_UID": "0",
               "TSS2_LOG": "all+trace", "TSS2_LOGFILE": trap, "PYTHONPATH": "/tmp"}
    for args, stdin in ((["--stdin", "test", "root"], b"0000\n"),
                        (["--stdin", "delete", "root"], b"0000\n"),
                        (["--stdin", "setup", "root"], b"1234\n"),
                        (["--policy", "/tmp/x", "status"], b"")):
        result = subprocess.run([*AS_NOBODY, setgid_launcher, "--json", *args],
                                input=stdin, check=False, capture_output=True,
                                env=hostile, timeout=TIMEOUT, start_new_session=True)
        assert result.returncode == 6, (args, result.stderr)
        assert one_json(result)["result"] == "permission_denied"
    assert not os.path.exists(trap)


# --- the rules as pure functions ----------------------------------------------------------

def test_rules_root_self_other():
    from pinutil import users
    from pinutil.errors import PermissionDenied

    root, alice, bob = users.User("root", 0), users.User("alice", 1000), users.User("bob", 1001)
    rules = (users.may_setup, users.may_change, users.may_delete, users.may_test,
             users.may_status)
    for rule in rules:
        rule(root, alice)
        rule(alice, alice)
        with pytest.raises(PermissionDenied):
            rule(alice, bob)
        with pytest.raises(PermissionDenied):
            rule(alice, root)
    users.may_manage_master_key(root)
    users.may_choose_policy(root)
    for rule in (users.may_manage_master_key, users.may_choose_policy):
        with pytest.raises(PermissionDenied):
            rule(alice)
    assert users.change_needs_old_pin(alice) and not users.change_needs_old_pin(root)
    assert users.delete_needs_pin(alice) and not users.delete_needs_pin(root)
    assert users.delete_needs_confirmation(root) and not users.delete_needs_confirmation(alice)


def test_user_lookup():
    from pinutil import users
    from pinutil.errors import UnknownUser

    assert users.lookup_user("root") == users.User("root", 0)
    assert users.lookup_user(str(OTHER.pw_uid)).name == OTHER.pw_name
    for bad in ("", "no-such-user-xyz", "x" * 300, "a\x00b", "4000000000", "-1", "\u0661"):
        with pytest.raises(UnknownUser):
            users.lookup_user(bad)
    assert users.current_caller().uid == os.getuid()
