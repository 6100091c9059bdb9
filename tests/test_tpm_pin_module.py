"""modules/tpm_pin.py end to end: real libpam (build/pamhost), a real swtpm per test.

Every test gets a `pin_env` (tests/support/pin_env.py): its own swtpm, a root-owned
policy file with a limit of 3 and short timeouts, a private pam.d directory. After every
PAM transaction the TPM's own counter is read out of band with tpm2-tools (as owner: no
attempt spent) and must equal the failures so far. Most tests run with both backends
(`direct`: in the host process; `helper`: build/pinutil in a child with an empty
environment; `daemon`: a real pinutild of the test's own, tests/support/pinutild.py)
and must give the same results and prompts.

The module under test sits on a `required` line when a test looks at its own PAM code:
on a lone `sufficient` line libpam turns any failure into PAM_PERM_DENIED.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading

import pytest

from tests.support.accounts import AS_NOBODY
from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_CONV_ERR,
    PAM_ERROR_MSG,
    PAM_PROMPT_ECHO_OFF,
    PAM_SUCCESS,
    prompts,
    result_code,
    result_name,
)
from tests.support.pin_env import PASSWORD, handle_of, write_file
from tests.test_pin_index import _define_like_pinpam

PIN = "2580"
WRONG = "1111"  # a valid PIN under the policy, just not this user's
LIMIT = 3
BACKENDS = ("direct", "helper", "daemon")
LOCKED_TEXT = ("PIN locked (too many failures). Use your password. "
               "Root can reset the PIN with: pinutil change root")
HUNG_TIMEOUT_S = 2  # helper_timeout in the hung-TPM tests
HUNG_BOUND_S = HUNG_TIMEOUT_S + 5  # generous: a loaded CI machine must not flake
ABSENT_BOUND_S = 3.0


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "daemon":  # a real pinutild on this test's TPM and policy
        request.getfixturevalue("pinutild_policy")
    return request.param


# ---- helpers ----------------------------------------------------------------------------
def auth(report) -> str | None:
    return result_name(report, "auth")


def errors_shown(report) -> list[str]:
    return [m["text"] for m in report["messages"] if m["style"] == PAM_ERROR_MSG]


def host_survived(report) -> None:
    """The host exited normally with a report, and the modules wrote nothing to fds 1/2."""
    assert report["exit_status"] == 0
    assert report["stdout"] == ""
    assert report["stderr"] == "", report["stderr"]


def pin_service(env, backend, *args, name="pin", control="required", **kw) -> str:
    return env.service(name, env.tpm_pin_line(*args, backend=backend, control=control, **kw))


def login(env, service, answers, user="root", **kw):
    report = env.run(service, user=user, answers=answers, **kw)
    host_survived(report)
    return report


def lock_with_pinutil(env, user="root") -> None:
    """LIMIT wrong PINs through `pinutil test` (out of the PAM path under test)."""
    for n in range(1, LIMIT + 1):
        done = env.pinutil("--stdin", "test", user, stdin=WRONG + "\n")
        assert done.returncode == 7, done.stdout  # wrong PIN (the lock shows on the next try)
        assert env.counter(user) == (n, LIMIT)


# ---- enrol, succeed, fail, lock ----------------------------------------------------------
def test_enrolled_pin_succeeds(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_SUCCESS"
    assert report["messages"] == [{"style": PAM_PROMPT_ECHO_OFF, "text": "PIN: "}]
    assert pin_env.counter("root") == (0, LIMIT)
    assert report["items"]["user"] == "root"  # PAM_USER is never changed


def test_wrong_pin_counts_once_and_says_how_many_are_left(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [WRONG])
    assert auth(report) == "PAM_AUTH_ERR"
    assert errors_shown(report) == ["Incorrect PIN (2 attempts left)."]
    assert pin_env.counter("root") == (1, LIMIT)
    # The right PIN afterwards: the prompt says what is left, success resets the counter.
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_SUCCESS"
    assert prompts(report) == ["PIN (2 attempts left): "]
    assert pin_env.counter("root") == (0, LIMIT)


def test_prompts_count_down_to_the_lock(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    steps = [
        ("PIN: ", "Incorrect PIN (2 attempts left)."),
        ("PIN (2 attempts left): ", "Incorrect PIN (1 attempt left)."),
        ("PIN (last attempt): ", "Incorrect PIN. " + LOCKED_TEXT),
    ]
    for failures, (prompt, message) in enumerate(steps, start=1):
        report = login(pin_env, svc, [WRONG])
        assert auth(report) == "PAM_AUTH_ERR"
        assert prompts(report) == [prompt]
        assert errors_shown(report) == [message]
        assert pin_env.counter("root") == (failures, LIMIT)

    # Locked: no prompt at all, MAXTRIES, the locked message; the TPM counter stays.
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_MAXTRIES"
    assert prompts(report) == [] and report["answers_used"] == 0
    assert errors_shown(report) == [LOCKED_TEXT]
    assert pin_env.counter("root") == (LIMIT, LIMIT)

    # The right PIN no longer works, whichever way it arrives.
    svc2 = pin_env.service(
        "first", pin_env.test_module_line("set_authtok", f"token={PIN}"),
        pin_env.tpm_pin_line("use_first_pass", backend=backend))
    assert auth(login(pin_env, svc2, [])) == "PAM_MAXTRIES"
    done = pin_env.pinutil("--stdin", "test", "root", stdin=PIN + "\n")
    assert done.returncode == 11 and json.loads(done.stdout)["result"] == "locked"
    assert pin_env.counter("root") == (LIMIT, LIMIT)


def test_not_enrolled_is_unavailable_without_a_prompt(pin_env, backend):
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # no prompt, no message
    assert handle_of("root") not in pin_env.enrolled_handles()


def test_unknown_user_is_user_unknown_without_a_prompt(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [PIN], user="pypam-no-such-user")
    assert auth(report) == "PAM_USER_UNKNOWN"
    assert report["conv_calls"] == 0
    assert report["items"]["user"] == "pypam-no-such-user"
    assert pin_env.counter("root") == (0, LIMIT)


# ---- what the user types ------------------------------------------------------------------
INVALID_PINS = {  # Enter (an empty PIN) is no PIN at all: tests/test_messages.py
    "short": "258",
    "long": "258025802",
    "letters": "25a0",
    "arabic_indic_digits": "\u0662\u0665\u0668\u0660",
    "fullwidth_digits": "\uff12\uff15\uff18\uff10",
    "leading_space": " 2580",
    "inner_space": "25 80",
    "trailing_tab": "2580\t",
    "trailing_newline": "2580\n",
    "trailing_cr": "2580\r",
    "invalid_utf8": b"25\xff80",
    "512_bytes": "2" * 512,
    "4_kib": "2" * 4096,
    "1_mib": "2" * (1 << 20),
    "format_string": "%s%n%x%p",
    "format_digits": "%d%d",
}


@pytest.mark.parametrize("typed", INVALID_PINS.values(), ids=INVALID_PINS.keys())
def test_invalid_pin_is_refused_before_the_tpm(pin_env, backend, typed):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [typed])
    assert auth(report) == "PAM_AUTH_ERR"
    assert prompts(report) == ["PIN: "]
    assert errors_shown(report) == ["Invalid PIN."]
    assert pin_env.counter("root") == (0, LIMIT)  # no TPM attempt spent


CONV_FAULTS = {
    "no_conv_function": ["--no-conv"],
    "conv_error": ["--conv-error"],
    "conv_null_resp": ["--conv-null-resp"],
    "conv_null_answers": ["--conv-null-answers"],
    "no_answer_left": [],
}


@pytest.mark.parametrize("fault", CONV_FAULTS.values(), ids=CONV_FAULTS.keys())
def test_conversation_fault_fails_without_spending_an_attempt(pin_env, backend, fault):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [], extra_args=fault)
    assert result_code(report, "auth") == PAM_CONV_ERR
    assert pin_env.counter("root") == (0, LIMIT)
    # The index is untouched: the right PIN still works afterwards.
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"


# ---- PAM_AUTHTOK: try_first_pass, use_first_pass, hygiene ------------------------------------
def _first_pass_service(env, backend, option, token=None):
    lines = []
    if token is not None:
        lines.append(env.test_module_line("set_authtok", f"token={token}"))
    lines.append(env.tpm_pin_line(option, backend=backend))
    return env.service("first", *lines)


def test_try_first_pass_with_a_password_spends_nothing_and_prompts(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = _first_pass_service(pin_env, backend, "try_first_pass", token="hunter2")
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: "]
    assert pin_env.counter("root") == (0, LIMIT)
    # A password that is not a PIN never counts, even if the typed PIN is then wrong.
    report = login(pin_env, svc, [WRONG])
    assert auth(report) == "PAM_AUTH_ERR"
    assert pin_env.counter("root") == (1, LIMIT)


def test_try_first_pass_without_an_earlier_token_prompts(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = _first_pass_service(pin_env, backend, "try_first_pass")
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_SUCCESS" and prompts(report) == ["PIN: "]
    assert pin_env.counter("root") == (0, LIMIT)


@pytest.mark.parametrize("option", ["try_first_pass", "use_first_pass"])
def test_first_pass_with_the_pin_needs_no_prompt(pin_env, backend, option):
    pin_env.enrol("root", PIN)
    svc = _first_pass_service(pin_env, backend, option, token=PIN)
    report = login(pin_env, svc, [])
    assert auth(report) == "PAM_SUCCESS" and prompts(report) == []
    assert pin_env.counter("root") == (0, LIMIT)


@pytest.mark.parametrize("token", ["hunter2", "25 80", "258025802", None],
                         ids=["password", "space", "too_long", "no_token"])
def test_use_first_pass_with_a_non_pin_fails_without_prompt_or_attempt(pin_env, backend, token):
    pin_env.enrol("root", PIN)
    svc = _first_pass_service(pin_env, backend, "use_first_pass", token=token)
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_AUTH_ERR"
    assert prompts(report) == [] and report["answers_used"] == 0
    assert pin_env.counter("root") == (0, LIMIT)


@pytest.mark.parametrize("typed", [PIN, WRONG], ids=["right_pin", "wrong_pin"])
def test_the_pin_never_reaches_pam_authtok(pin_env, backend, typed):
    pin_env.enrol("root", PIN)
    record = pin_env.record_file()
    svc = pin_env.service(
        "hygiene", pin_env.tpm_pin_line(backend=backend),
        pin_env.test_module_line("record_authtok", f"record={record}"))
    report = login(pin_env, svc, [typed])
    assert auth(report) == ("PAM_SUCCESS" if typed == PIN else "PAM_AUTH_ERR")
    with open(record) as f:
        seen = [json.loads(line) for line in f]
    assert seen == [{"authtok": None, "user": "root"}]
    assert pin_env.counter("root") == (0 if typed == PIN else 1, LIMIT)


# ---- a PIN-or-password stack ------------------------------------------------------------------
FALLBACKS = ("not_enrolled", "locked", "tpm_killed", "wrong_pin")


@pytest.mark.parametrize("situation", FALLBACKS)
def test_password_fallback(pin_env, backend, situation):
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                          pin_env.matrix_line("required"))
    pin_env.set_password("root", "login")
    if situation != "not_enrolled":
        pin_env.enrol("root", PIN)
    if situation == "locked":
        lock_with_pinutil(pin_env)
    if situation == "tpm_killed":
        pin_env.swtpm.kill()

    answers = [WRONG, PASSWORD] if situation == "wrong_pin" else [PASSWORD]
    report = login(pin_env, svc, answers)
    assert auth(report) == "PAM_SUCCESS"
    assert prompts(report)[-1] == "Password: "
    if situation == "wrong_pin":
        assert prompts(report) == ["PIN: ", "Password: "]
        assert errors_shown(report) == ["Incorrect PIN (2 attempts left)."]
        assert pin_env.counter("root") == (1, LIMIT)
    else:
        assert prompts(report) == ["Password: "]  # no PIN prompt
    if situation == "locked":
        assert errors_shown(report) == [LOCKED_TEXT]
        assert pin_env.counter("root") == (LIMIT, LIMIT)
    if situation == "tpm_killed":
        assert report["elapsed"] < ABSENT_BOUND_S

    # The fallback is the password, not a free pass: a wrong password still fails.
    answers = [WRONG, "not the password"] if situation == "wrong_pin" else ["not the password"]
    assert auth(login(pin_env, svc, answers)) == "PAM_AUTH_ERR"


def test_enrolled_pin_succeeds_without_the_password(pin_env, backend):
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend=backend, control="sufficient"),
                          pin_env.matrix_line("required"))
    pin_env.set_password("root", "login")
    pin_env.enrol("root", PIN)
    report = login(pin_env, svc, [PIN, "not the password"])
    assert auth(report) == "PAM_SUCCESS"
    assert prompts(report) == ["PIN: "] and report["answers_used"] == 1
    assert pin_env.counter("root") == (0, LIMIT)


# ---- TPM absent, gone, hung -------------------------------------------------------------------
def test_absent_tpm_is_unavailable_fast(pin_env, backend):
    pin_env.write_policy(tcti="swtpm:path=/tmp/pypam-no-such-tpm/sock")
    svc = pin_service(pin_env, backend)
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert report["elapsed"] < ABSENT_BOUND_S


def test_killed_tpm_is_unavailable_and_the_counter_survives(pin_env, backend):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    assert auth(login(pin_env, svc, [WRONG])) == "PAM_AUTH_ERR"
    pin_env.swtpm.kill()
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL" and report["conv_calls"] == 0
    assert report["elapsed"] < ABSENT_BOUND_S
    pin_env.swtpm.start()
    assert pin_env.counter("root") == (1, LIMIT)
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, LIMIT)


def test_hung_tpm_is_unavailable_within_the_helper_timeout(pin_env, backend):
    """swtpm stopped with SIGSTOP: sockets open, no answer. The module must give up
    within helper_timeout (plus slack) and the host must survive."""
    pin_env.enrol("root", PIN)
    pin_env.write_policy(helper_timeout=HUNG_TIMEOUT_S)
    svc = pin_service(pin_env, backend)
    pin_env.swtpm.pause()
    try:
        report = login(pin_env, svc, [PIN], timeout=HUNG_BOUND_S + 5)
    finally:
        pin_env.swtpm.resume()
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["elapsed"] <= HUNG_BOUND_S, report["elapsed"]
    assert report["elapsed"] >= HUNG_TIMEOUT_S * 0.9  # it did wait for the TPM
    assert pin_env.counter("root") == (0, LIMIT)
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"


TPM_CC_NV_READ = 0x0000014E


def _read_tpm_message(sock: socket.socket) -> bytes | None:
    """One TPM command or response (10-byte header with the total size at offset 2)."""
    data = b""
    while len(data) < 10 or len(data) < int.from_bytes(data[2:6], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


class StallingTpmProxy:
    """Relays tcti-swtpm traffic to a swtpm and stalls the PIN check itself: the
    NV_Read whose authHandle is the PIN index (the owner's counter read, done first,
    has authHandle OWNER and passes). `deliver=False`: that command never reaches the
    TPM; `deliver=True`: the TPM executes it (and counts a wrong PIN) but its answer
    never comes back. The upstream connection is closed while stalling, so tpm2-tools
    can still read the counter (swtpm serves one connection at a time)."""

    def __init__(self, swtpm, path: str, handle: int, deliver: bool) -> None:
        self.swtpm, self.path, self.handle, self.deliver = swtpm, path, handle, deliver
        self.tcti = f"swtpm:path={path}"
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.listeners = [self._listen(path, swtpm.sock, self._relay_commands),
                          self._listen(path + ".ctrl", swtpm.sock + ".ctrl", self._relay_raw)]

    def _listen(self, path, upstream_path, handler) -> socket.socket:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(16)

        def accept() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                threading.Thread(target=handler, args=(client, upstream_path),
                                 daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return server

    def _relay_commands(self, client: socket.socket, upstream_path: str) -> None:
        with client:
            while (command := _read_tpm_message(client)) is not None:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
                    up.connect(upstream_path)
                    pin_check = (int.from_bytes(command[6:10], "big") == TPM_CC_NV_READ
                                 and int.from_bytes(command[10:14], "big") == self.handle)
                    if not pin_check or self.deliver:
                        up.sendall(command)
                        response = _read_tpm_message(up)
                if pin_check:
                    self.stalled.set()
                    self.release.wait(60)
                    return
                if response is None:
                    return
                client.sendall(response)

    def _relay_raw(self, client: socket.socket, upstream_path: str) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as up:
            up.connect(upstream_path)
            while True:
                data = client.recv(65536)
                if not data:
                    return
                up.sendall(data)
                client.sendall(up.recv(65536))

    def close(self) -> None:
        self.release.set()
        for server in self.listeners:
            server.close()


@pytest.mark.parametrize("deliver", [False, True], ids=["command_lost", "answer_lost"])
def test_tpm_hanging_during_the_pin_check_is_unavailable_and_counts_at_most_once(
        pin_env, backend, deliver):
    pin_env.enrol("root", PIN)
    proxy = StallingTpmProxy(pin_env.swtpm, os.path.join(pin_env.dir, "proxy"),
                             handle_of("root"), deliver)
    try:
        pin_env.write_policy(tcti=proxy.tcti, helper_timeout=HUNG_TIMEOUT_S)
        svc = pin_service(pin_env, backend)
        report = login(pin_env, svc, [WRONG], timeout=HUNG_BOUND_S + 5)
        assert proxy.stalled.is_set()  # the hang really was in the PIN check
        assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
        assert prompts(report) == ["PIN: "] and errors_shown(report) == []
        assert HUNG_TIMEOUT_S * 0.9 <= report["elapsed"] <= HUNG_BOUND_S, report["elapsed"]
        # Sent at most once: lost on the way, or counted once and never resent.
        assert pin_env.counter("root") == (1 if deliver else 0, LIMIT)
    finally:
        proxy.close()
    pin_env.write_policy()
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, LIMIT)


# ---- both backends alike ----------------------------------------------------------------------
SCENARIO = [WRONG, PIN, WRONG, "12a4", WRONG, WRONG, PIN]


def _play(env, svc):
    seen = []
    for typed in SCENARIO:
        report = login(env, svc, [typed])
        seen.append((auth(report), report["messages"], env.counter("root")))
    return seen


def test_both_backends_give_the_same_results_and_prompts(pin_env):
    pin_env.enrol("root", PIN)
    direct = _play(pin_env, pin_service(pin_env, "direct"))
    done = pin_env.pinutil("--yes", "delete", "root")
    assert done.returncode == 0, done.stderr
    pin_env.enrol("root", PIN)
    helper = _play(pin_env, pin_service(pin_env, "helper"))
    assert direct == helper
    assert [step[2][0] for step in direct] == [1, 0, 1, 1, 2, 3, 3]
    assert direct[-1][0] == "PAM_MAXTRIES"


# ---- an index enrolled by someone else (pinpam's layout via tpm2-tools) --------------------
def test_pin_index_made_with_tpm2_tools_in_pinpams_layout_authenticates(pin_env, backend):
    _define_like_pinpam(pin_env.swtpm, handle_of("root"), PIN.encode(), LIMIT)
    assert pin_env.counter("root") == (0, LIMIT)
    # No enrolment record names root yet: root vouches for it (tests/test_enrolment_record.py).
    assert pin_env.pinutil("adopt", "root").returncode == 0
    svc = pin_service(pin_env, backend)
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"
    report = login(pin_env, svc, [WRONG])
    assert errors_shown(report) == ["Incorrect PIN (2 attempts left)."]
    assert pin_env.counter("root") == (1, LIMIT)
    assert auth(login(pin_env, svc, [PIN])) == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, LIMIT)


# ---- cross-user: a set-uid host run by nobody (sudo-like) ----------------------------------------
@pytest.fixture
def setuid_env(pin_env):
    """pin_env plus a set-uid-root copy of the test host and a set-uid-root pinutil
    launcher whose built-in policy is this environment's (nobody may not pass --policy).
    Both root-owned in the root-owned work directory, removed with it."""
    launcher = pin_env.build_launcher(mode=0o4755)
    pin_env.write_policy(pinutil_path=launcher)
    host = os.path.join(pin_env.dir, "pamhost-setuid")
    shutil.copyfile(pin_env_host(), host)
    os.chown(host, 0, 0)
    os.chmod(host, 0o4755)
    pin_env.setuid_host = host
    pin_env.launcher = launcher
    return pin_env


def pin_env_host() -> str:
    from tests.support.pamhost import build_host

    return build_host()


def _auto_service(env):
    record = env.record_file("backend.jsonl")
    svc = env.service(
        "sudo", env.test_module_line("record_backend", f"policy={env.policy}", f"record={record}"),
        env.tpm_pin_line(backend="auto"))
    return svc, record


def _as_nobody(env, svc, user, answers):
    return login(env, svc, answers, user=user, host=env.setuid_host, prefix=AS_NOBODY)


def test_setuid_caller_gets_the_helper_and_cannot_test_roots_pin(setuid_env):
    env = setuid_env
    env.enrol("root", PIN)
    svc, record = _auto_service(env)
    report = _as_nobody(env, svc, "root", [WRONG])
    assert result_code(report, "auth") != PAM_SUCCESS
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0  # refused before any prompt
    assert env.counter("root") == (0, LIMIT)
    with open(record) as f:
        picked = json.loads(f.readline())
    assert picked == {"backend": "helper", "setid": True, "uid": 65534, "euid": 0}

    # The helper itself, run the same way (real uid nobody, euid root): test is refused
    # by the rules, not by an unreachable TPM.
    done = subprocess.run([*AS_NOBODY, env.launcher, "--json", "--stdin", "test", "root"],
                          input=(WRONG + "\n").encode(), capture_output=True, env={},
                          timeout=60, check=False, cwd="/")
    assert done.returncode == 6, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["result"] == "permission_denied"
    assert env.counter("root") == (0, LIMIT)


def test_setuid_caller_can_use_their_own_pin_through_the_helper(setuid_env):
    """The positive control of the refusal above: same host, same helper, own user."""
    env = setuid_env
    env.enrol("nobody", PIN)
    svc, record = _auto_service(env)
    report = _as_nobody(env, svc, "nobody", [WRONG])
    assert auth(report) == "PAM_AUTH_ERR"
    assert errors_shown(report) == ["Incorrect PIN (2 attempts left)."]
    assert env.counter("nobody") == (1, LIMIT)
    report = _as_nobody(env, svc, "nobody", [PIN])
    assert auth(report) == "PAM_SUCCESS"
    assert prompts(report) == ["PIN (2 attempts left): "]
    assert env.counter("nobody") == (0, LIMIT)
    with open(record) as f:
        assert {json.loads(line)["backend"] for line in f} == {"helper"}


def test_setuid_host_with_backend_direct_offers_no_other_users_pin(setuid_env):
    """`backend=direct` written on a set-uid host's line (su, sudo) keeps the real-uid
    rule: nobody's host gets no prompt for root's PIN and spends nothing (review 2 G11:
    the direct backend checked whatever account the caller named)."""
    env = setuid_env
    env.enrol("root", PIN)
    svc = env.service("su-direct", env.tpm_pin_line(backend="direct"))
    report = _as_nobody(env, svc, "root", [WRONG])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert env.counter("root") == (0, LIMIT)
    env.enrol("nobody", PIN)  # the control: its own user's PIN still works
    svc = env.service("su-direct-own", env.tpm_pin_line(backend="direct"))
    assert auth(_as_nobody(env, svc, "nobody", [PIN])) == "PAM_SUCCESS"


# ---- policy file and arguments --------------------------------------------------------------------
def _break_policy(env, how: str) -> None:
    path = env.policy
    good = env.policy_text()
    if how == "group_writable":
        os.chmod(path, 0o664)
    elif how == "world_writable":
        os.chmod(path, 0o646)
    elif how == "not_root_owned":
        os.chown(path, 65534, 65534)
    elif how == "symlink":
        target = os.path.join(env.dir, "policy.real")
        write_file(target, good)
        os.unlink(path)
        os.symlink(target, path)
    elif how == "fifo":
        os.unlink(path)
        os.mkfifo(path, 0o644)
    elif how == "directory":
        os.unlink(path)
        os.mkdir(path, 0o755)
    elif how == "garbage":
        write_file(path, b"\x7fELF\x02\x01\x01\x00garbage\n=== ;;\n")
    elif how == "not_utf8":
        write_file(path, good.encode() + b"# caf\xe9\n")
    elif how == "unknown_key":
        write_file(path, good + "pin_lockout_forever = yes\n")
    elif how == "bad_value":
        write_file(path, env.policy_text(pin_lockout_max_attempts="0"))
    elif how == "duplicate_key":
        write_file(path, good + "pin_min_length = 4\n")
    elif how == "oversized":
        write_file(path, good + "#" * (65 * 1024) + "\n")
    else:
        raise AssertionError(how)


POLICY_BREAKS = ("group_writable", "world_writable", "not_root_owned", "symlink", "fifo",
                 "directory", "garbage", "not_utf8", "unknown_key", "bad_value",
                 "duplicate_key", "oversized")


@pytest.mark.parametrize("how", POLICY_BREAKS)
def test_broken_policy_file_is_unavailable_never_success(pin_env, backend, how):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    _break_policy(pin_env, how)
    report = login(pin_env, svc, [PIN], timeout=30)
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert report["elapsed"] < ABSENT_BOUND_S  # a FIFO must not block
    assert pin_env.counter("root") == (0, LIMIT)


def test_unknown_module_arguments_are_ignored(pin_env, backend):
    pin_env.enrol("root", PIN)
    # A known switch with a value (use_first_pass=no) is refused instead: see
    # tests/test_module_arguments.py.
    svc = pin_service(pin_env, backend, "frobnicate", "colour=blue")
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_SUCCESS" and prompts(report) == ["PIN: "]
    assert pin_env.counter("root") == (0, LIMIT)


def test_unknown_backend_is_unavailable_never_success(pin_env):
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, "telepathy")
    report = login(pin_env, svc, [PIN])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL" and report["conv_calls"] == 0


def test_success_is_only_success(pin_env, backend):
    """A control for every negative test above: the same service accepts the right PIN
    and only the right PIN, with no code in between."""
    pin_env.enrol("root", PIN)
    svc = pin_service(pin_env, backend)
    assert result_code(login(pin_env, svc, [PIN]), "auth") == PAM_SUCCESS
    assert result_code(login(pin_env, svc, ["2581"]), "auth") == PAM_AUTH_ERR
    assert pin_env.counter("root") == (1, LIMIT)
