"""tpm_pin under concurrency (checklist 16) and in Linux-PAM's stack shapes (checklist 19).

Real swtpm, real libpam through build/pamhost, no mocks; the TPM's own counter is read
out of band (tpm2-tools, as owner) after every scenario.

Concurrency. There is no resource manager in front of swtpm: the transient objects and
sessions of concurrent logins share the TPM's few slots (3 each on swtpm), so a login
whose primary key or salted session cannot be loaded gets TPM_RC_OBJECT_MEMORY /
SESSION_MEMORY before its PIN is sent. Whatever the interleaving, every login must end
in a defined result: a wrong PIN is PAM_AUTH_ERR (counted by the TPM exactly once) or
PAM_AUTHINFO_UNAVAIL (never counted: the PIN was not checked) or, once the limit is
reached, PAM_MAXTRIES; a right PIN is PAM_SUCCESS or PAM_AUTHINFO_UNAVAIL and never
counts. No host may crash or hang, and nothing may stay loaded in the TPM afterwards.
Several host processes (both backends; started freely, or piled up on a stopped swtpm
and released at once) and one host with 4 threads x 5 transactions (direct backend).

Stacks. Our module on `sufficient`, `requisite`, `[success=1 default=ignore]` and inside
a `substack`: whenever the PIN cannot vouch for the user (not enrolled, TPM gone, wrong
PIN, locked, broken policy) the application's pam_authenticate result is a failure,
never PAM_SUCCESS and never PAM_IGNORE; with the right PIN each shape succeeds, so every
negative case has a positive control on the very same stack.
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter

import pytest

from tests.support.pamhost import (
    PAM_AUTH_ERR,
    PAM_AUTHINFO_UNAVAIL,
    PAM_IGNORE,
    PAM_MAXTRIES,
    PAM_NAMES,
    PAM_SUCCESS,
    SECURITY_DIR,
    prompts,
    result_code,
    run_pam,
)
from tests.support.pin_env import DEFAULT_POLICY, write_file

PIN = "2580"
WRONG = "1111"  # a valid PIN under the policy, just not this user's
USER = "root"
CONCURRENT = 6
HIGH_LIMIT = 20  # well above CONCURRENT: no concurrent round may lock the PIN
THREADS, REPEAT = 4, 5
LIMIT = int(DEFAULT_POLICY["pin_lockout_max_attempts"])
DENY = f"{SECURITY_DIR}/pam_deny.so"
PERMIT = f"{SECURITY_DIR}/pam_permit.so"
BACKENDS = ("direct", "helper")
START = ("free", "tpm_held")
HOLD_S = 1.5  # the hosts start within this; well under helper_timeout (10 s)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


# ---- helpers ------------------------------------------------------------------------------
def enrol_with_limit(env, user: str, pin: str, limit: int) -> None:
    """Enrol under a policy whose lockout limit is `limit` (pin_env.enrol assumes 3)."""
    env.write_policy(pin_lockout_max_attempts=str(limit))
    done = env.pinutil("--json", "--stdin", "setup", user, stdin=pin + "\n")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert env.counter(user) == (0, limit)


def survived(report) -> bool:
    """The host exited normally with a report, and the modules wrote nothing to fds 1/2."""
    return (report.get("report", True) is not None and report["exit_status"] == 0
            and report["stdout"] == "" and report["stderr"] == "")


def concurrent_logins(env, service: str, answers, n: int = CONCURRENT,
                      hold: bool = False) -> list[dict]:
    """`n` host processes on the same service and user, released together.

    hold=True stops swtpm (SIGSTOP) while the hosts start, so that they all pile up on
    the TPM socket and hit it at once when it wakes up (their Python start-up would
    otherwise spread them out)."""
    gate = threading.Barrier(n + 1)
    reports: list = [None] * n

    def one(i: int) -> None:
        gate.wait()
        try:
            reports[i] = run_pam(env.pamd, service, user=USER, answers=answers,
                                 timeout=45, check=False)
        except Exception as e:  # noqa: BLE001 - a timeout is a result to report, not a crash
            reports[i] = {"report": None, "error": repr(e), "exit_status": None,
                          "stdout": "", "stderr": ""}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    if hold:
        env.swtpm.pause()
    try:
        gate.wait()
        if hold:
            time.sleep(HOLD_S)
    finally:
        if hold:
            env.swtpm.resume()
    for t in threads:
        t.join(timeout=60)
    assert all(not t.is_alive() for t in threads)
    return reports


def describe(reports) -> str:
    return "\n".join(
        f"#{i}: exit={r.get('exit_status')} rc={PAM_NAMES.get(result_code(r, 'auth'))} "
        f"err={r.get('error', '')} stderr={r['stderr'][-300:]!r}"
        for i, r in enumerate(reports))


def tpm_left_nothing_loaded(env) -> None:
    """No transient object or session left behind (no resource manager flushes them: a
    leak here would make every later login fail with OBJECT/SESSION_MEMORY)."""
    for cap in ("handles-transient", "handles-loaded-session", "handles-saved-session"):
        assert env.swtpm.tools("tpm2_getcap", cap).stdout.strip() == b"", cap


def tally(reports) -> Counter:
    return Counter(PAM_NAMES.get(result_code(r, "auth"), "NONE") for r in reports)


# ---- checklist 16: the same user from several processes at once ------------------------------
@pytest.mark.parametrize("start", START)
def test_concurrent_wrong_pins_are_counted_exactly(pin_env, backend, start):
    enrol_with_limit(pin_env, USER, PIN, HIGH_LIMIT)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
    reports = concurrent_logins(pin_env, svc, [WRONG], hold=start == "tpm_held")
    why = describe(reports)
    assert all(survived(r) for r in reports), why
    codes = [result_code(r, "auth") for r in reports]
    assert PAM_SUCCESS not in codes, why
    assert set(codes) <= {PAM_AUTH_ERR, PAM_AUTHINFO_UNAVAIL}, why
    counted = codes.count(PAM_AUTH_ERR)
    # The TPM's own counter, read out of band: exactly the logins told "wrong PIN".
    assert pin_env.counter(USER) == (counted, HIGH_LIMIT), why
    assert counted >= 1, why  # at least one login really reached the TPM
    for r, code in zip(reports, codes):
        if code == PAM_AUTH_ERR:
            assert prompts(r) == ["PIN: "] or prompts(r)[0].startswith("PIN ("), why
    tpm_left_nothing_loaded(pin_env)
    print(f"concurrent wrong PIN ({backend}, {start}): {dict(tally(reports))}, counter {counted}")

    # The PIN still works after the storm and resets the counter.
    report = pin_env.run(svc, user=USER, answers=[PIN])
    assert survived(report) and result_code(report, "auth") == PAM_SUCCESS
    assert pin_env.counter(USER) == (0, HIGH_LIMIT)


@pytest.mark.parametrize("start", START)
def test_concurrent_right_pins_succeed_or_are_unavailable_and_never_count(pin_env, backend, start):
    enrol_with_limit(pin_env, USER, PIN, HIGH_LIMIT)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
    reports = concurrent_logins(pin_env, svc, [PIN], hold=start == "tpm_held")
    why = describe(reports)
    assert all(survived(r) for r in reports), why
    codes = [result_code(r, "auth") for r in reports]
    assert set(codes) <= {PAM_SUCCESS, PAM_AUTHINFO_UNAVAIL}, why
    assert PAM_SUCCESS in codes, why
    assert pin_env.counter(USER) == (0, HIGH_LIMIT), why
    tpm_left_nothing_loaded(pin_env)
    print(f"concurrent right PIN ({backend}, {start}): {dict(tally(reports))}")


def test_concurrent_wrong_pins_never_exceed_the_limit(pin_env, backend):
    """A parallel guessing race on a small limit (3): the TPM counts at most `limit`
    wrong PINs, every counted one is PAM_AUTH_ERR, the rest are MAXTRIES (locked
    before the check) or AUTHINFO_UNAVAIL; no login succeeds, no host crashes."""
    pin_env.enrol(USER, PIN)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
    reports = concurrent_logins(pin_env, svc, [WRONG], n=2 * CONCURRENT)
    why = describe(reports)
    assert all(survived(r) for r in reports), why
    codes = [result_code(r, "auth") for r in reports]
    assert set(codes) <= {PAM_AUTH_ERR, PAM_MAXTRIES, PAM_AUTHINFO_UNAVAIL}, why
    counted = codes.count(PAM_AUTH_ERR)
    assert 1 <= counted <= LIMIT, why
    assert pin_env.counter(USER) == (counted, LIMIT), why
    tpm_left_nothing_loaded(pin_env)
    print(f"race on limit {LIMIT} ({backend}): {dict(tally(reports))}, counter {counted}")
    # Locked means locked, even for the right PIN; otherwise the right PIN still works.
    report = pin_env.run(svc, user=USER, answers=[PIN])
    assert result_code(report, "auth") == (PAM_MAXTRIES if counted == LIMIT else PAM_SUCCESS)


#: How tpm_pin's syslog line (pam_pypam(...): [tpm_pin] ...) names each outcome.
_OUTCOME_LINE = re.compile(r"\[tpm_pin\] (PIN accepted for |no PIN login for .*\[(\w+)\]$)")


def outcomes_from_syslog(messages) -> Counter:
    """One outcome per transaction: success / wrong_pin / unavailable / other:<line>;
    `late` counts the unavailable ones that ran out of time (a subset, not an outcome)."""
    seen: Counter = Counter()
    for message in messages:
        m = _OUTCOME_LINE.search(message)
        if m is None:
            continue
        if m.group(1).startswith("PIN accepted"):
            seen["success"] += 1
        elif m.group(2) == "wrong_pin":
            seen["wrong_pin"] += 1
        elif m.group(2) == "tpm_unavailable":
            seen["unavailable"] += 1
            if "did not answer within" in message:  # the deadline, maybe after the PIN went
                seen["late"] += 1
        else:
            seen[f"other: {message}"] += 1
    return seen


@pytest.mark.parametrize("typed", [PIN, WRONG], ids=["right_pin", "wrong_pin"])
def test_one_host_many_threads(pin_env, syslog_capture, typed):
    """--threads 4 --repeat 5 in one host process (direct backend: the TPM in-process).

    The host counts only transactions whose rc differs from --expect (0), so the stack
    maps exactly SUCCESS and AUTHINFO_UNAVAIL to success (jump over pam_deny into
    pam_permit) and everything else to itself (die): `failures` is the number of
    transactions that were neither. The module's syslog line classifies each of them."""
    enrol_with_limit(pin_env, USER, PIN, HIGH_LIMIT)
    line = pin_env.tpm_pin_line(backend="direct",
                                control="[success=1 authinfo_unavail=1 default=die]")
    svc = pin_env.service("mapped", line, f"auth requisite {DENY}", f"auth required {PERMIT}")
    args = ["--threads", str(THREADS), "--repeat", str(REPEAT), "--expect", str(PAM_SUCCESS)]
    report = syslog_capture.run_pam(pin_env.pamd, svc, user=USER, answers=[typed],
                                    extra_args=args, timeout=60, check=False)
    assert survived(report), report
    total = THREADS * REPEAT
    assert report["transactions"] == total
    seen = outcomes_from_syslog(syslog_capture.messages())
    why = f"{dict(seen)}\n{syslog_capture.text()[-3000:]}"
    assert sum(seen.values()) - seen["late"] == total, why  # one outcome per transaction
    assert set(seen) <= {"success", "unavailable", "wrong_pin", "late"}, why
    failures, limit = pin_env.counter(USER)
    assert limit == HIGH_LIMIT
    if typed == PIN:
        assert report["failures"] == 0, why  # each one SUCCESS or AUTHINFO_UNAVAIL
        assert seen["wrong_pin"] == 0 and failures == 0, why
        assert seen["success"] >= 1, why
    else:
        assert seen["success"] == 0, why
        # Exactly the wrong-PIN transactions failed (AUTH_ERR), and the TPM counted each
        # of them once. An unavailable one was never counted, unless it ran out of time:
        # the deadline may pass after the PIN went out and the TPM counted it (a loaded
        # machine), and then nobody can know; it still fails closed.
        assert report["failures"] == seen["wrong_pin"], why
        assert seen["wrong_pin"] <= failures <= seen["wrong_pin"] + seen["late"], why
        assert failures >= 1, why
    tpm_left_nothing_loaded(pin_env)
    print(f"threads {THREADS}x{REPEAT} ({'right' if typed == PIN else 'wrong'} PIN): "
          f"{dict(seen)}, TPM counter {failures}")


# ---- checklist 19: stack shapes ------------------------------------------------------------
def _shape_sufficient(env, line):
    return env.service("shape", line("sufficient"), f"auth required {DENY}")


def _shape_requisite(env, line):
    return env.service("shape", line("requisite"), f"auth required {PERMIT}")


def _shape_jump(env, line):
    return env.service("shape", line("[success=1 default=ignore]"),
                       f"auth requisite {DENY}", f"auth required {PERMIT}")


def _shape_substack(env, line):
    # Absolute path: libpam 1.5.2 looks a relative substack name up in /etc/pam.d even
    # with pam_start_confdir.
    sub = env.pamd.write("shape-sub", "\n".join([line("sufficient"), f"auth required {DENY}"]))
    return env.service("shape", f"auth substack {sub}", f"auth required {PERMIT}")


SHAPES = {
    "sufficient_then_deny": _shape_sufficient,
    "requisite_then_permit": _shape_requisite,
    "jump_over_deny_then_permit": _shape_jump,
    "substack_then_permit": _shape_substack,
}
#: The module's own code in each situation (as on a `required` line).
MODULE_CODE = {
    "not_enrolled": PAM_AUTHINFO_UNAVAIL,
    "tpm_gone": PAM_AUTHINFO_UNAVAIL,
    "wrong_pin": PAM_AUTH_ERR,
    "locked": PAM_MAXTRIES,
    "bad_policy": PAM_AUTHINFO_UNAVAIL,
}


def expected_failure(shape: str, situation: str) -> int:
    """What libpam must hand the application: requisite returns the module's own code;
    the other shapes fall through to pam_deny (PAM_AUTH_ERR)."""
    return MODULE_CODE[situation] if shape == "requisite_then_permit" else PAM_AUTH_ERR


@pytest.mark.parametrize("situation", list(MODULE_CODE))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_stack_shape_never_turns_a_pin_failure_into_success(pin_env, backend, shape,
                                                            situation):
    env = pin_env
    svc = SHAPES[shape](env, lambda control: env.tpm_pin_line(backend=backend,
                                                              control=control))
    if situation != "not_enrolled":
        env.enrol(USER, PIN)
    if situation == "locked":
        for _ in range(LIMIT):
            done = env.pinutil("--stdin", "test", USER, stdin=WRONG + "\n")
            assert done.returncode == 7, done.stdout  # wrong PIN (the lock shows on the next try)
        assert env.counter(USER) == (LIMIT, LIMIT)
    if situation == "bad_policy":
        write_file(env.policy, b"\x7fELF\x02\x01\x01\x00garbage\n=== ;;\n")
    if situation == "tpm_gone":
        env.swtpm.kill()

    typed = WRONG if situation == "wrong_pin" else PIN
    report = env.run(svc, user=USER, answers=[typed])
    assert survived(report), report
    rc = result_code(report, "auth")
    assert rc not in (PAM_SUCCESS, PAM_IGNORE), PAM_NAMES.get(rc)
    assert rc == expected_failure(shape, situation), PAM_NAMES.get(rc)
    assert prompts(report) == (["PIN: "] if situation == "wrong_pin" else [])

    if situation == "tpm_gone":
        env.swtpm.start()
    if situation == "bad_policy":
        env.write_policy()
    if situation != "not_enrolled":
        expected = {"wrong_pin": 1, "locked": LIMIT}.get(situation, 0)
        assert env.counter(USER) == (expected, LIMIT)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_stack_shape_succeeds_with_the_right_pin(pin_env, backend, shape):
    """The positive control: the same shapes, the right PIN, PAM_SUCCESS."""
    env = pin_env
    svc = SHAPES[shape](env, lambda control: env.tpm_pin_line(backend=backend,
                                                              control=control))
    env.enrol(USER, PIN)
    report = env.run(svc, user=USER, answers=[PIN])
    assert survived(report), report
    assert result_code(report, "auth") == PAM_SUCCESS
    assert prompts(report) == ["PIN: "]
    assert env.counter(USER) == (0, LIMIT)
    # ...and the very same stack still refuses a wrong PIN right after.
    report = env.run(svc, user=USER, answers=[WRONG])
    assert result_code(report, "auth") == expected_failure(shape, "wrong_pin")
    assert env.counter(USER) == (1, LIMIT)
