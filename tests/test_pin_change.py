"""Changing a PIN (issue 10 point 6: a crash or kill at any point loses no enrolment).

`pinutil change` enrols the new PIN at the user's spare handle, switches the enrolment
record to it, deletes the old index, and does the same once more to bring the PIN
home to nv_base + uid (pinutil/pin/lifecycle.py, pin/slots.py). The code before it
deleted the index and then defined the new one: a kill in between left no PIN at all.

Kill tests: `pinutil change` as root, SIGKILLed right after each step
(tests/support/kill_point.py, the machinery of `owner protect`'s kill tests); then the
old or the new PIN logs in through the real PAM module and the other does not, status
is sane, and `pinutil change` again finishes with the PIN at nv_base + uid and nothing
at the spare handle. On the old code the kill after the undefine (and after its
define) leaves neither PIN, and the later points are never reached.

Attacker tests (a test user in a private namespace, the set-gid launcher): a wrong old
PIN spends exactly one attempt and changes nothing; another user's PIN cannot be
changed; a record naming someone else's index never lets a PIN through; an index
planted at the spare handle before a change is replaced, never adopted; an index an
older version enrolled for a uid of 0x200000 or more, which sits at another user's spare
handle, is that uid's and stays (the change is refused before the old PIN is checked).
"""
from __future__ import annotations

import json
import os

import pytest

from pinutil.pin import enrolment, slots
from tests.service.enrol_support import PASSWORD, UID, USER
from tests.support.kill_point import run_killed
from tests.support.pamhost import result_name
from tests.support.pin_env import NV_BASE
from tests.test_enrolment_proof import HANDLE, LIMIT, answer, pinutil
from tests.test_pin_index import _define_like_pinpam

PIN, NEW, NEWER, WRONG = "2580", "4711", "9314", "1111"
ROOT_PRIMARY = NV_BASE
ROOT_SPARE = NV_BASE + slots.SPARE_OFFSET
USER_SPARE = HANDLE + slots.SPARE_OFFSET
DEFINE, WRITE, UNDEFINE = (f"pinutil.tpm.context:Tpm.{name}"
                           for name in ("nv_define_space", "nv_write", "nv_undefine_space"))
RECORD = "pinutil.pin.enrolment:write"

# (function, its n-th call, the PIN that logs in after a kill right after it)
KILL_POINTS = [
    pytest.param(DEFINE, 1, PIN, id="spare-defined"),
    pytest.param(WRITE, 1, PIN, id="spare-written"),
    pytest.param(RECORD, 1, NEW, id="record-names-spare"),
    pytest.param(UNDEFINE, 1, NEW, id="old-index-deleted"),
    pytest.param(DEFINE, 2, NEW, id="home-defined"),
    pytest.param(WRITE, 2, NEW, id="home-written"),
    pytest.param(RECORD, 2, NEW, id="record-names-home"),
]


def recorded_handle(pin_env, uid: int = 0) -> int:
    return enrolment.read(pin_env.enrolment_dir, uid).nv_index


def defined(pin_env, *handles: int) -> list[int]:
    return [h for h in pin_env.enrolled_handles() if h in handles]


def login(pin_env, pin: str) -> str:
    """One PAM authentication of root with `pin` through the tpm_pin module (direct)."""
    service = pin_env.service("pin", pin_env.tpm_pin_line())
    report = pin_env.run(service, user="root", answers=[pin])
    assert report["exit_status"] == 0 and report["stderr"] == "", report
    return result_name(report, "auth")


def status(pin_env) -> dict:
    done = pin_env.pinutil("--json", "status", "root")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def change_as_root(pin_env, new: str):
    return pin_env.pinutil("--json", "--stdin", "change", "root", stdin=new + "\n")


def flush_what_the_killed_process_left(pin_env) -> None:
    """swtpm has no resource manager: a killed client's sessions stay loaded."""
    for kind in ("-t", "-l", "-s"):
        pin_env.swtpm.tools("tpm2_flushcontext", kind)


# --- a kill at every step ----------------------------------------------------------------

@pytest.mark.parametrize(("point", "count", "works"), KILL_POINTS)
def test_change_killed_at_any_point_leaves_exactly_one_pin(pin_env, point, count, works):
    pin_env.enrol("root", PIN)
    run_killed(point, count, ["--policy", pin_env.policy, "--stdin", "change", "root"],
               stdin=NEW + "\n")
    flush_what_the_killed_process_left(pin_env)

    other = NEW if works == PIN else PIN
    assert login(pin_env, other) == "PAM_AUTH_ERR"
    assert login(pin_env, works) == "PAM_SUCCESS"
    st = status(pin_env)
    assert st["enrolled"] is True and st["record"] == "ok", st
    assert (st["failures"], st["limit"]) == (0, LIMIT)
    assert recorded_handle(pin_env) in (ROOT_PRIMARY, ROOT_SPARE)

    # Changing again (root needs no old PIN) finishes and clears what the kill left.
    done = change_as_root(pin_env, NEWER)
    assert done.returncode == 0, done.stderr
    assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
    assert recorded_handle(pin_env) == ROOT_PRIMARY
    assert login(pin_env, works) == "PAM_AUTH_ERR"
    assert login(pin_env, NEWER) == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, LIMIT)


def test_change_without_a_kill_ends_at_the_primary_handle(pin_env):
    pin_env.enrol("root", PIN)
    assert login(pin_env, WRONG) == "PAM_AUTH_ERR"
    done = change_as_root(pin_env, NEW)
    assert done.returncode == 0, done.stderr
    assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
    assert recorded_handle(pin_env) == ROOT_PRIMARY
    assert pin_env.counter("root") == (0, LIMIT)  # a fresh counter
    assert login(pin_env, PIN) == "PAM_AUTH_ERR"
    assert login(pin_env, NEW) == "PAM_SUCCESS"


def test_setup_and_delete_clear_a_killed_change(pin_env):
    """A kill that left the new index at the spare handle unrecorded: delete removes it
    with the PIN, and setup after that has both handles to itself."""
    pin_env.enrol("root", PIN)
    run_killed(WRITE, 1, ["--policy", pin_env.policy, "--stdin", "change", "root"],
               stdin=NEW + "\n")
    flush_what_the_killed_process_left(pin_env)
    assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY, ROOT_SPARE]
    done = pin_env.pinutil("--yes", "delete", "root")
    assert done.returncode == 0, done.stderr
    assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == []
    pin_env.enrol("root", NEWER)
    assert login(pin_env, NEWER) == "PAM_SUCCESS"


# --- pinutild killed in the middle of a change ----------------------------------------------

CC_NV_UNDEFINE_SPACE, CC_NV_DEFINE_SPACE, CC_NV_WRITE = 0x122, 0x12A, 0x137

# (TPM command, its n-th, the PIN that logs in after pinutild dies before the TPM sees it)
SERVICE_KILL_POINTS = [
    pytest.param(CC_NV_WRITE, 1, PIN, id="spare-defined"),
    pytest.param(CC_NV_UNDEFINE_SPACE, 1, NEW, id="record-names-spare"),
    pytest.param(CC_NV_DEFINE_SPACE, 2, NEW, id="old-index-deleted"),
    pytest.param(CC_NV_UNDEFINE_SPACE, 2, NEW, id="record-names-home"),
]


@pytest.mark.parametrize(("code", "nth", "works"), SERVICE_KILL_POINTS)
def test_pinutild_killed_in_a_change_leaves_exactly_one_pin(pin_env, code, nth, works):
    """pinutild's pin-change, the service and its TPM worker SIGKILLed at a TPM command
    (through a proxy on the TPM transport, tests/support/tpm_proxy.py); then a new
    pinutild: exactly one PIN passes its pin-check, and pin-change finishes."""
    from devtools.pinutild import Pinutild
    from tests.support.kill_point import KillAtCommand
    from tests.support.tpm_proxy import TpmProxy

    pin_env.enrol("root", PIN)
    kill = KillAtCommand(code, nth)
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"), kill)
    proxy.start()
    killed = Pinutild(pin_env.write_policy(os.path.join(pin_env.dir, "policy-proxy"),
                                           tcti=proxy.tcti),
                      os.path.join(pin_env.dir, "killed.sock"))
    try:
        killed.start()
        kill.pid = killed.proc.pid
        reply = killed.ask(verb="pin-change", user="root", pin=NEW.encode())
        assert reply.get("result") != "success", reply
        assert killed.proc.wait(timeout=30) == -9 and kill.seen == nth
    finally:
        killed.stop()
        proxy.stop()
    flush_what_the_killed_process_left(pin_env)

    service = Pinutild(pin_env.policy, os.path.join(pin_env.dir, "again.sock"))
    service.start()
    try:
        def check(pin: str) -> str:
            return service.ask(verb="pin-check", user="root", pin=pin.encode())["result"]

        assert check(NEW if works == PIN else PIN) == "wrong_pin"
        assert check(works) == "success"
        st = service.ask(verb="pin-status", user="root")
        assert (st["enrolled"], st["record"], st["failures"]) == (True, "ok", 0), st
        assert service.ask(verb="pin-change", user="root", pin=NEWER.encode())["result"] == \
            "success"
        assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
        assert check(works) == "wrong_pin"
        assert check(NEWER) == "success"
    finally:
        service.stop()


# --- two changes at once ----------------------------------------------------------------------

def _waiting_on_flock(pid: int, inode: int) -> bool:
    """/proc/locks shows `pid` blocked (" -> ") on a FLOCK of the file `inode`."""
    with open("/proc/locks", encoding="ascii") as f:
        return any("->" in line and "FLOCK" in line and line.split()[5] == str(pid)
                   and line.split()[6].endswith(f":{inode}") for line in f)


def test_a_change_waits_for_another_enrolment_in_progress(pin_env):
    """Setup, change and delete hold the records' directory's flock: a second change
    (pinutild's and root's pinutil at once) waits, touching nothing, and then runs: it
    never removes the other's new index at the spare handle as a leftover."""
    import fcntl
    import subprocess
    import time

    pin_env.enrol("root", PIN)
    record = enrolment.read(pin_env.enrolment_dir, 0)
    dfd = os.open(pin_env.enrolment_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)  # as an enrolment in progress holds it
        child = subprocess.Popen(pin_env.pinutil_command("--stdin", "change", "root"),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env={}, cwd="/")
        child.stdin.write(NEW.encode() + b"\n")
        child.stdin.close()
        give_up = time.monotonic() + 60
        while not _waiting_on_flock(child.pid, os.fstat(dfd).st_ino):
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < give_up, "the change never waited for the lock"
            time.sleep(0.05)
        assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
        assert enrolment.read(pin_env.enrolment_dir, 0) == record
    finally:
        os.close(dfd)  # releases the lock
    assert child.wait(timeout=60) == 0, child.stderr.read()
    assert defined(pin_env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
    assert login(pin_env, NEW) == "PAM_SUCCESS"


# --- attackers ---------------------------------------------------------------------------

@pytest.fixture
def user_env(pin_env, accounts, syslog_capture):
    from tests.support.accounts import setgid_tss_launcher

    accounts.add_user(USER, UID, PASSWORD)
    pin_env.launcher = setgid_tss_launcher(pin_env)

    def run(*args: str, stdin: str = "", as_root: bool = False):
        return pinutil(pin_env, accounts, syslog_capture, *args, stdin=stdin, as_root=as_root)

    done = run("setup", USER, stdin=f"{PIN}\n", as_root=True)
    assert done.returncode == 0, done.stderr
    return pin_env, run


def _public(pin_env, handle: int) -> str:
    return pin_env.swtpm.tools("tpm2_nvreadpublic", hex(handle)).stdout.decode()


def test_wrong_old_pin_spends_one_attempt_and_changes_nothing(user_env):
    env, run = user_env
    public, record = _public(env, HANDLE), enrolment.read(env.enrolment_dir, UID)
    done = run("change", stdin=f"{WRONG}\n{NEW}\n")
    assert done.returncode == 7 and answer(done)["result"] == "wrong_pin", done.stderr
    assert env.swtpm.read_pin_counter(HANDLE) == (1, LIMIT)
    assert defined(env, HANDLE, USER_SPARE) == [HANDLE]
    assert _public(env, HANDLE) == public
    assert enrolment.read(env.enrolment_dir, UID) == record
    assert run("test", stdin=f"{NEW}\n").returncode == 7
    assert run("test", stdin=f"{PIN}\n").returncode == 0


def test_the_user_changes_their_pin_with_the_old_one(user_env):
    env, run = user_env
    done = run("change", stdin=f"{PIN}\n{NEW}\n")
    assert done.returncode == 0, done.stderr
    assert defined(env, HANDLE, USER_SPARE) == [HANDLE]
    assert run("test", stdin=f"{PIN}\n").returncode == 7
    assert run("test", stdin=f"{NEW}\n").returncode == 0


def test_a_user_cannot_change_another_users_pin(user_env):
    env, run = user_env
    env.enrol("root", PIN)
    done = run("change", "root", stdin=f"{PIN}\n{NEW}\n")
    assert done.returncode == 6 and answer(done)["result"] == "permission_denied"
    assert env.counter("root") == (0, LIMIT)
    assert defined(env, ROOT_PRIMARY, ROOT_SPARE) == [ROOT_PRIMARY]
    assert login(env, PIN) == "PAM_SUCCESS"


@pytest.mark.parametrize("handle", [ROOT_PRIMARY, ROOT_SPARE, HANDLE + 1],
                         ids=["root-primary", "root-spare", "not-a-user-handle"])
def test_a_record_naming_another_index_lets_no_pin_through(user_env, handle):
    """A stale or forged record of the user naming someone else's index (here root's,
    whose PIN the user knows): no test, no change, and root's index is untouched."""
    env, run = user_env
    env.enrol("root", NEWER)
    if handle != ROOT_PRIMARY:  # an index there, with the PIN the user knows
        _define_like_pinpam(env.swtpm, handle, NEWER.encode(), LIMIT)
    enrolment.write(env.enrolment_dir, enrolment.EnrolmentRecord(
        uid=UID, user=USER, nv_index=handle, enrolled=enrolment.now_utc()), as_root=True)
    for args, stdin in ((("test",), f"{NEWER}\n"), (("change",), f"{NEWER}\n{NEW}\n")):
        done = run(*args, stdin=stdin)
        assert done.returncode != 0 and answer(done)["result"] == "enrolment_mismatch", \
            (args, done.stdout)
    assert env.swtpm.read_pin_counter(handle) == (0, LIMIT)
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)
    assert env.counter("root") == (0, LIMIT)


def test_an_index_planted_at_the_spare_handle_is_replaced_not_adopted(user_env):
    """Someone with owner access defined an index of our layout at the user's spare
    handle with a PIN they know. A change (also one killed right after its define)
    never lets that PIN log in."""
    env, run = user_env
    _define_like_pinpam(env.swtpm, USER_SPARE, WRONG.encode(), LIMIT)
    done = run("change", stdin=f"{PIN}\n{NEW}\n")
    assert done.returncode == 0, done.stderr
    assert defined(env, HANDLE, USER_SPARE) == [HANDLE]
    assert run("test", stdin=f"{WRONG}\n").returncode == 7
    assert run("test", stdin=f"{NEW}\n").returncode == 0
    assert os.path.exists(os.path.join(env.enrolment_dir, str(UID)))


def test_an_old_large_uid_enrolment_at_the_spare_handle_is_kept(user_env):
    """Code before the spare handles enrolled uid UID + 0x200000 at nv_base + that uid,
    which is the test user's spare handle. The user's change is refused (no attempt
    spent, nothing changed); delete and setup leave that index alone too. On the code
    before, the change deleted it as a leftover of a killed change."""
    env, run = user_env
    old_uid = UID + slots.SPARE_OFFSET
    _define_like_pinpam(env.swtpm, USER_SPARE, NEWER.encode(), LIMIT)
    enrolment.write(env.enrolment_dir, enrolment.EnrolmentRecord(
        uid=old_uid, user="olduser", nv_index=USER_SPARE, enrolled=enrolment.now_utc()),
        as_root=True)
    record = enrolment.read(env.enrolment_dir, UID)

    done = run("change", stdin=f"{PIN}\n{NEW}\n")
    assert done.returncode == 1 and answer(done)["result"] == "error", done.stdout
    assert f"is the PIN index of uid {old_uid}" in answer(done)["error"], done.stdout
    assert env.swtpm.read_pin_counter(USER_SPARE) == (0, LIMIT)
    assert env.swtpm.read_pin_counter(HANDLE) == (0, LIMIT)  # no attempt spent
    assert enrolment.read(env.enrolment_dir, UID) == record
    assert run("test", stdin=f"{PIN}\n").returncode == 0

    assert run("delete", stdin=f"{PIN}\n").returncode == 0
    assert run("setup", USER, stdin=f"{NEW}\n", as_root=True).returncode == 0
    assert run("test", stdin=f"{NEW}\n").returncode == 0
    assert env.swtpm.read_pin_counter(USER_SPARE) == (0, LIMIT)
    assert enrolment.read(env.enrolment_dir, old_uid).nv_index == USER_SPARE


# --- login cost ----------------------------------------------------------------------------

def test_a_login_reads_the_record_once(pin_env, monkeypatch):
    """Finding the handle through the record costs a login no TPM command and no more
    reads than before: pinutild's pin-status, pin-login and pin-check read it once each (handle and
    verdict from the same read), the direct backend once per login, in the host."""
    from pinutil.deadline import TpmBudget
    from pinutil.pin.local_login import DirectBackend
    from pinutil.pin.policy import load_policy
    from pinutil.service import verbs
    from pinutil.users import User

    pin_env.enrol("root", PIN)
    reads: list[int] = []
    real_read = enrolment.read
    monkeypatch.setattr(enrolment, "read", lambda d, uid: reads.append(uid) or real_read(d, uid))
    root = User("root", 0)
    try:
        for verb, fields in ((verbs.pin_status, {"user": "root"}),
                             (verbs.pin_login, {"user": "root"}),
                             (verbs.pin_check, {"user": "root", "pin": PIN.encode()})):
            reads.clear()
            assert verbs.answer(verb, pin_env.policy, root, fields)["result"] == "success"
            assert reads == [0], verb
    finally:
        verbs._close_kept()
    reads.clear()
    backend = DirectBackend(load_policy(pin_env.policy), TpmBudget(10.0))
    assert backend.status(root).enrolled
    backend.check(root, PIN.encode())
    assert reads == [0]
