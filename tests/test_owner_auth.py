"""Owner-hierarchy authorisation: `pinutil owner protect|release` and the owner password
file (pinutil/owner_auth.py, pinutil/cli/owner.py, Tpm.owner_auth in tpm/context.py).

The attacker is any process that may open the TPM without the password file (the
`tss` group): here tpm2-tools with the factory empty owner password, out of band (it
shares no code with pinutil). Every test runs on a real swtpm; the tests of the
protected state fail on the code before `pinutil owner` (which had no way to protect
the owner hierarchy: the control tests show the same attacks succeed unprotected).
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from pinutil import owner_auth
from tests.support.accounts import AS_NOBODY
from tests.support.kill_point import run_killed
from tests.support.pamhost import result_name
from tests.support.pin_env import PINUTIL, handle_of, write_file
from tests.support.tpm_proxy import CC_NV_READ

PIN, NEW_PIN, WRONG = "2580", "4711", "1111"
# TPM_RC_BAD_AUTH and TPM_RC_AUTH_FAIL (session 1; the lockout hierarchy's), as
# tpm2-tools prints them
REFUSALS = ("(0x9a2)", "(0x98e)")
SALT_KEY, MASTER_KEY = "0x81000082", "0x81000081"


def owner_file(pin_env) -> str:
    return os.path.join(pin_env.dir, "owner-auth")


def protect(pin_env) -> owner_auth.OwnerPasswords:
    done = pin_env.pinutil("--json", "owner", "protect")
    assert done.returncode == 0, done.stderr
    passwords = owner_auth.load(owner_file(pin_env))
    pin_env.swtpm.owner_auth = passwords.owner  # the oracle reads counters with it
    return passwords


def permanent(pin_env) -> dict[str, int]:
    out = pin_env.swtpm.tools("tpm2_getcap", "properties-variable").stdout.decode()
    block = out.split("TPM2_PT_PERMANENT:")[1].split("TPM2_PT_STARTUP_CLEAR")[0]
    return {k.strip(): int(v) for k, v in (line.split(":") for line in block.splitlines()
                                           if ":" in line)}


def attack(pin_env, *args: str) -> subprocess.CompletedProcess:
    """A tpm2-tools command with the empty owner password (what `tss` members have)."""
    return pin_env.swtpm.tools(*args, check=False)


def refused(done: subprocess.CompletedProcess) -> bool:
    """The TPM said BAD_AUTH (the owner or lockout password), nothing else."""
    return done.returncode != 0 and any(rc in done.stderr.decode().lower() for rc in REFUSALS)


def status(pin_env, user: str = "root") -> dict:
    done = pin_env.pinutil("--json", "status", user)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def pin_test(pin_env, pin: str, user: str = "root") -> subprocess.CompletedProcess:
    return pin_env.pinutil("--json", "--stdin", "test", user, stdin=pin + "\n")


# --- the attacks ----------------------------------------------------------------------

def test_unprotected_the_attack_works(pin_env):
    """The control: with the factory empty owner password a TPM user deletes the PIN."""
    pin_env.enrol("root", PIN)
    assert attack(pin_env, "tpm2_nvundefine", "-C", "o", hex(handle_of("root"))).returncode == 0
    assert handle_of("root") not in pin_env.enrolled_handles()


def test_protected_nobody_without_the_password_deletes_or_replaces_a_pin_index(pin_env):
    protect(pin_env)
    pin_env.enrol("root", PIN)
    handle = hex(handle_of("root"))
    undefine = attack(pin_env, "tpm2_nvundefine", "-C", "o", handle)
    assert refused(undefine), undefine.stderr
    # nor define one of its own (at a free handle of the owner range: the same refusal)
    define = attack(pin_env, "tpm2_nvdefine", "-C", "o", "-s", "8", "-a",
                    "ownerread|ownerwrite|authread|authwrite", "0x01300000")
    assert refused(define), define.stderr
    # nor clear the TPM through the lockout hierarchy (which would drop every index)
    clear = attack(pin_env, "tpm2_clear", "-c", "l")
    assert refused(clear), clear.stderr
    assert handle_of("root") in pin_env.enrolled_handles()
    assert pin_env.counter("root") == (0, 3)
    assert pin_test(pin_env, PIN).returncode == 0


def test_protected_nobody_without_the_password_replaces_the_salt_or_master_key(pin_env):
    protect(pin_env)
    pin_env.write_policy(master_key_file=os.path.join(pin_env.dir, "sealed_master_key"))
    init = pin_env.pinutil("--yes", "--json", "master-key", "init")
    assert init.returncode == 0, init.stderr
    pin_env.enrol("root", PIN)  # setup makes the salt key persistent
    handles = pin_env.swtpm.tools("tpm2_getcap", "handles-persistent").stdout.decode()
    assert SALT_KEY in handles and MASTER_KEY in handles
    for handle in (SALT_KEY, MASTER_KEY):
        evict = attack(pin_env, "tpm2_evictcontrol", "-C", "o", "-c", handle)
        assert refused(evict), evict.stderr
    # nor make a key of the owner hierarchy (a competing salt key needs one)
    primary = attack(pin_env, "tpm2_createprimary", "-C", "o", "-c",
                     os.path.join(pin_env.dir, "attacker.ctx"))
    assert refused(primary), primary.stderr
    token = pin_env.pinutil("master-key", "get-user-token", "root")
    assert token.returncode == 0 and len(token.stdout.strip()) == 64, token.stderr


def test_protect_refuses_an_owner_password_it_does_not_hold(pin_env):
    assert attack(pin_env, "tpm2_changeauth", "-c", "o", "theirs").returncode == 0
    done = pin_env.pinutil("--json", "owner", "protect")
    assert done.returncode == 6, done.stderr  # PERMISSION_DENIED
    assert b"already has a password" in done.stderr
    assert not os.path.lexists(owner_file(pin_env))
    assert not os.path.lexists(owner_auth.pending_path(owner_file(pin_env)))
    assert permanent(pin_env)["lockoutAuthSet"] == 0


def test_refused_owner_passwords_do_not_count_towards_the_lockout(pin_env):
    """What makes a guessed owner password harmless to everyone else (context.py)."""
    protect(pin_env)
    for _ in range(5):
        assert attack(pin_env, "tpm2_nvundefine", "-C", "o", "0x01300000").returncode != 0
    out = pin_env.swtpm.tools("tpm2_getcap", "properties-variable").stdout.decode()
    assert "TPM2_PT_LOCKOUT_COUNTER: 0x0" in out
    pin_env.enrol("root", PIN)


# --- everything still works with the password -----------------------------------------

def test_protected_setup_test_change_delete_and_salt_key_work(pin_env):
    passwords = protect(pin_env)
    assert permanent(pin_env)["ownerAuthSet"] == 1
    assert permanent(pin_env)["lockoutAuthSet"] == 1
    st = os.stat(owner_file(pin_env))
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600)  # no pinutild group here
    pin_env.enrol("root", PIN)
    assert pin_test(pin_env, WRONG).returncode == 7
    assert pin_env.counter("root") == (1, 3)
    assert pin_test(pin_env, PIN).returncode == 0
    fields = status(pin_env)
    assert fields["owner_hierarchy"]["protected"] is True
    assert fields["owner_hierarchy"]["password"] == "held"
    human = pin_env.pinutil("status", "root")
    assert b"owner hierarchy protected, password held" in human.stdout, human
    change = pin_env.pinutil("--stdin", "change", "root", stdin=NEW_PIN + "\n")
    assert change.returncode == 0, change.stderr
    assert pin_test(pin_env, NEW_PIN).returncode == 0
    record = pin_env.pinutil("salt-key", "record")
    assert record.returncode == 0, record.stderr
    delete = pin_env.pinutil("--yes", "delete", "root")
    assert delete.returncode == 0, delete.stderr
    assert handle_of("root") not in pin_env.enrolled_handles()
    # `protect` again is a no-op that keeps the same passwords
    again = pin_env.pinutil("--json", "owner", "protect")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    assert owner_auth.load(owner_file(pin_env)) == passwords


def test_status_says_not_protected_by_default(pin_env):
    fields = status(pin_env)
    assert fields["owner_hierarchy"]["protected"] is False
    assert fields["owner_hierarchy"]["password"] == "none"
    human = pin_env.pinutil("status", "root")
    assert b"owner hierarchy not protected" in human.stdout, human


def test_release_gives_the_factory_state_back(pin_env):
    protect(pin_env)
    pin_env.enrol("root", PIN)
    done = pin_env.pinutil("owner", "release")
    assert done.returncode == 0, done.stderr
    assert permanent(pin_env)["ownerAuthSet"] == 0
    assert permanent(pin_env)["lockoutAuthSet"] == 0
    assert not os.path.lexists(owner_file(pin_env))
    pin_env.swtpm.owner_auth = b""
    assert pin_env.counter("root") == (0, 3)
    assert pin_test(pin_env, PIN).returncode == 0


def test_owner_commands_are_root_only(pin_env):
    launcher = pin_env.build_launcher()
    done = subprocess.run([*AS_NOBODY, launcher, "owner", "protect"], capture_output=True,
                          env={}, cwd="/", timeout=60, check=False)
    assert done.returncode == 6, done.stderr
    assert permanent(pin_env)["ownerAuthSet"] == 0


# --- the login paths --------------------------------------------------------------------

def test_pin_login_through_the_service_and_the_root_direct_backend(pin_env, pinutild_policy):
    protect(pin_env)
    pin_env.enrol("root", PIN)
    for backend in ("daemon", "direct"):
        svc = pin_env.service(f"pin-{backend}", pin_env.tpm_pin_line(backend=backend))
        report = pin_env.run(svc, user="root", answers=[PIN])
        assert result_name(report, "auth") == "PAM_SUCCESS", (backend, report)
        report = pin_env.run(svc, user="root", answers=[WRONG])
        assert result_name(report, "auth") == "PAM_AUTH_ERR", (backend, report)
    assert pin_env.counter("root") == (1, 3)


def test_a_process_that_may_not_read_the_password_fails_closed(pin_env):
    """The helper backend runs `pinutil --json --stdin status|test USER` as the user
    (set-gid tss when installed): it may not read the root-only file, so it reads no
    counter and sends no PIN: AUTHINFO_UNAVAIL (exit 9) saying why, nothing spent."""
    protect(pin_env)
    pin_env.enrol("nobody", PIN)
    launcher = pin_env.build_launcher()
    os.chmod(pin_env.swtpm.state_dir, 0o711)  # nobody reaches the TPM, as tss would
    for command in ("status", "test"):
        done = subprocess.run([*AS_NOBODY, launcher, "--json", "--stdin", command],
                              input=PIN.encode() + b"\n", capture_output=True, env={},
                              cwd="/", timeout=60, check=False)
        assert done.returncode == 9, (command, done.stderr)
        assert json.loads(done.stdout)["result"] == "tpm_unavailable"
        assert b"may not read its password" in done.stderr, done.stderr
    assert pin_env.counter("nobody") == (0, 3)
    assert pin_test(pin_env, PIN, "nobody").returncode == 0  # root still can


# --- a bad password file changes nothing ----------------------------------------------

def _spoil(pin_env, how: str) -> None:
    path = owner_file(pin_env)
    if how == "foreign-owner":
        os.chown(path, 65534, -1)
    elif how == "others-read":
        os.chmod(path, 0o644)
    elif how == "foreign-group":
        os.chown(path, -1, 65534)
        os.chmod(path, 0o640)
    elif how == "corrupt":
        write_file(path, "owner zzz\n", 0o600)
    elif how == "wrong":
        write_file(path, f"owner {'ab' * 32}\nlockout {'cd' * 32}\n", 0o600)
    elif how == "symlink":
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)


SPOILED = {"foreign-owner": b"owned by uid 65534", "others-read": b"open to others",
           "foreign-group": b"open to its group", "corrupt": b"malformed",
           "wrong": b"refused the owner-hierarchy password", "symlink": b"symbolic link"}


@pytest.mark.parametrize("how", sorted(SPOILED))
def test_a_bad_password_file_is_a_clear_error_and_changes_nothing(pin_env, how):
    protect(pin_env)
    pin_env.enrol("root", PIN)
    _spoil(pin_env, how)
    for args, stdin in ((("--yes", "delete", "root"), ""),
                        (("--stdin", "change", "root"), NEW_PIN + "\n"),
                        (("owner", "release"), "")):
        done = pin_env.pinutil(*args, stdin=stdin)
        if how == "wrong" and args[0] == "owner":  # release tries no password it lacks
            assert done.returncode == 6 and b"does not hold" in done.stderr, done.stderr
            continue
        assert done.returncode == 9, (args, done.stderr)  # UNAVAILABLE
        assert SPOILED[how] in done.stderr, (args, done.stderr)
    assert handle_of("root") in pin_env.enrolled_handles()
    assert pin_env.counter("root") == (0, 3)
    assert permanent(pin_env)["ownerAuthSet"] == 1
    assert os.path.exists(os.path.join(pin_env.enrolment_dir, "0"))


# --- crash safety: a kill at any point leaves a password we hold ------------------------

_POINTS = {"change": "pinutil.tpm.context:Tpm.change_hierarchy_auth"}


def _run_killed(pin_env, point: str, count: int, action: str) -> None:
    run_killed(_POINTS.get(point, f"pinutil.owner_auth:{point}"), count,
               ["--policy", pin_env.policy, "owner", action])


def _held_passwords(pin_env) -> list[owner_auth.OwnerPasswords]:
    path = owner_file(pin_env)
    return [p for p in (owner_auth.load(path), owner_auth.load(owner_auth.pending_path(path)))
            if p is not None]


def _owner_password_is_known(pin_env) -> None:
    """The TPM's owner password is empty or in one of the two files."""
    if not permanent(pin_env)["ownerAuthSet"]:
        return
    for passwords in _held_passwords(pin_env):
        probe = pin_env.swtpm.tools("tpm2_createprimary", "-C", "o", "-P",
                                    f"hex:{passwords.owner.hex()}", "-c",
                                    os.path.join(pin_env.dir, "probe.ctx"), check=False)
        if probe.returncode == 0:
            pin_env.swtpm.tools("tpm2_flushcontext", "-t")
            return
    raise AssertionError("the TPM's owner password is in neither file")


@pytest.mark.parametrize(("point", "count"), [("write_pending", 1), ("change", 1),
                                              ("change", 2), ("commit_pending", 1)])
def test_protect_killed_at_any_point_is_finished_by_running_it_again(pin_env, point, count):
    pin_env.enrol("root", PIN)
    _run_killed(pin_env, point, count, "protect")
    _owner_password_is_known(pin_env)
    passwords = protect(pin_env)
    assert not os.path.lexists(owner_auth.pending_path(owner_file(pin_env)))
    assert permanent(pin_env)["ownerAuthSet"] == permanent(pin_env)["lockoutAuthSet"] == 1
    assert status(pin_env)["owner_hierarchy"]["password"] == "held"
    assert pin_env.counter("root") == (0, 3)
    delete = pin_env.pinutil("--yes", "delete", "root")
    assert delete.returncode == 0, delete.stderr
    assert passwords == owner_auth.load(owner_file(pin_env))


@pytest.mark.parametrize("count", [1, 2])
def test_release_killed_at_any_point_is_finished_by_running_it_again(pin_env, count):
    protect(pin_env)
    _run_killed(pin_env, "change", count, "release")
    _owner_password_is_known(pin_env)
    done = pin_env.pinutil("owner", "release")
    assert done.returncode == 0, done.stderr
    assert permanent(pin_env)["ownerAuthSet"] == permanent(pin_env)["lockoutAuthSet"] == 0
    assert not os.path.lexists(owner_file(pin_env))


def test_protected_a_user_enrols_changes_and_deletes_through_the_service(
        pin_env, accounts, syslog_capture):
    """pinutild's enrolment verbs (pin-setup, pin-change, pin-delete: a user's own, with
    the account password) take the owner password from the file, like pinutil's."""
    from tests.service.enrol_support import (
        PASSWORD,
        UID,
        USER,
        as_user,
        converse,
        running_in_namespace,
    )

    protect(pin_env)
    accounts.add_user(USER, UID, PASSWORD)
    handle = 0x01000000 + UID
    with running_in_namespace(pin_env, accounts) as service:
        setup = converse(service.socket, {"verb": "pin-setup", "user": USER},
                         [PASSWORD, PIN], as_user())
        assert setup["reply"]["result"] == "success", setup
        assert pin_env.swtpm.read_pin_counter(handle) == (0, 3)
        assert refused(attack(pin_env, "tpm2_nvundefine", "-C", "o", hex(handle)))
        change = converse(service.socket, {"verb": "pin-change", "user": USER,
                                           "old_pin": PIN.encode(), "pin": NEW_PIN.encode()},
                          [], as_user())
        assert change["reply"]["result"] == "success", change
        delete = converse(service.socket, {"verb": "pin-delete", "user": USER,
                                           "pin": NEW_PIN.encode()}, [], as_user())
        assert delete["reply"]["result"] == "success", delete
        assert handle not in pin_env.enrolled_handles()


def test_protected_a_token_without_a_persistent_salt_key(pin_env):
    """With no salt key persisted yet, the token's salted session creates the storage
    primary: an owner command, so the direct token path needs the owner password too."""
    passwords = protect(pin_env)
    pin_env.write_policy(master_key_file=os.path.join(pin_env.dir, "sealed_master_key"))
    assert pin_env.pinutil("--yes", "--json", "master-key", "init").returncode == 0
    pin_env.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-P", f"hex:{passwords.owner.hex()}",
                        "-c", SALT_KEY)
    handles = pin_env.swtpm.tools("tpm2_getcap", "handles-persistent").stdout.decode()
    assert SALT_KEY not in handles
    token = pin_env.pinutil("master-key", "get-user-token", "root")
    assert token.returncode == 0 and len(token.stdout.strip()) == 64, token.stderr


def test_protected_the_unprivileged_service_reads_its_group_readable_file(
        pin_env, accounts, syslog_capture):
    """The installed shape: with a `pinutild` group, protect writes the file 0640
    root:pinutild, and pinutild running as its own account (not root) reads it: a
    user enrols through it and logs in; the counter is read with the owner password."""
    from tests.service.enrol_support import PASSWORD, UID, USER, converse
    from tests.service.test_enrol_proof_process import SERVICE_UID, Shape

    shape = Shape(pin_env, accounts)  # adds the accounts `pinutild` and USER
    try:
        done = subprocess.run([*accounts.prefix(), PINUTIL, "--policy", pin_env.policy,
                               "owner", "protect"], capture_output=True, timeout=60,
                              check=False, env={}, cwd="/")
        assert done.returncode == 0, done.stderr
        st = os.stat(owner_file(pin_env))
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, SERVICE_UID, 0o640)
        with open(owner_file(pin_env), encoding="ascii") as f:
            lines = dict(line.split() for line in f if not line.startswith("#"))
        pin_env.swtpm.owner_auth = bytes.fromhex(lines["owner"])
        shape.start_proof()
        service = shape.start_service("--proof", shape.proof_socket)
        setup = converse(service.socket, {"verb": "pin-setup", "user": USER},
                         [PASSWORD, PIN], shape.client())
        assert setup["reply"]["result"] == "success", (setup, service.output())
        status = converse(service.socket, {"verb": "pin-status", "user": USER}, [],
                          shape.client())
        assert status["reply"]["result"] == "success", status
        assert status["reply"]["failures"] == 0  # the owner read, as pinutild's account
        assert pin_env.swtpm.read_pin_counter(0x01000000 + UID) == (0, 3)
        assert refused(attack(pin_env, "tpm2_nvundefine", "-C", "o", hex(0x01000000 + UID)))
    finally:
        shape.stop()


# --- the passwords never cross the TPM bus (review F8) --------------------------------

def _owner_reads(exchanges) -> int:
    """How many NV_Read commands the transcript holds authorised by the owner
    hierarchy (auth handle TPM_RH_OWNER): what pin-status sends before each prompt."""
    return sum(1 for e in exchanges
               if e.command[6:10] == CC_NV_READ.to_bytes(4, "big")
               and e.command[10:14] == (0x40000001).to_bytes(4, "big"))


def test_the_owner_and_lockout_passwords_never_cross_the_tpm_bus(pin_env):
    """A passive observer of the TPM bus (here the test proxy's transcript) during
    `owner protect`, a setup, PIN logins (the owner read before each prompt, direct
    and through pinutild), a change, `status`, a delete with no persistent salt key,
    and `owner release` never sees either password: owner commands are authorised by
    HMAC sessions and HierarchyChangeAuth's new value travels encrypted. On the code
    before (password sessions) every one of these put the owner password on the bus."""
    from tests.support.pinutild import start_pinutild
    from tests.support.tpm_proxy import TpmProxy

    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.dir, "tpm-proxy"))
    proxy.start()
    service = None
    try:
        pin_env.policy_extra["tcti"] = proxy.tcti
        pin_env.write_policy()
        passwords = protect(pin_env)
        pin_env.enrol("root", PIN)
        service = start_pinutild(pin_env)
        pin_env.policy_extra["service_socket"] = service.socket
        pin_env.write_policy()
        for backend in ("daemon", "direct"):
            svc = pin_env.service(f"pin-{backend}", pin_env.tpm_pin_line(backend=backend))
            for answer, result in ((PIN, "PAM_SUCCESS"), (WRONG, "PAM_AUTH_ERR")):
                report = pin_env.run(svc, user="root", answers=[answer])
                assert result_name(report, "auth") == result, (backend, report)
        assert pin_env.counter("root") == (1, 3)  # a good PIN resets the count
        change = pin_env.pinutil("--stdin", "change", "root", stdin=NEW_PIN + "\n")
        assert change.returncode == 0, change.stderr
        assert status(pin_env)["owner_hierarchy"]["password"] == "held"
        pin_env.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-P",
                            f"hex:{passwords.owner.hex()}", "-c", SALT_KEY)
        delete = pin_env.pinutil("--yes", "delete", "root")
        assert delete.returncode == 0, delete.stderr
        release = pin_env.pinutil("owner", "release")
        assert release.returncode == 0, release.stderr
    finally:
        if service is not None:
            service.stop()
        proxy.stop()
    assert permanent(pin_env)["ownerAuthSet"] == 0  # released through the proxy
    assert _owner_reads(proxy.exchanges) >= 4  # the logins' owner reads were seen
    bus = b"".join(e.command + (e.reply or b"") for e in proxy.exchanges)
    for name in owner_auth.NAMES:
        assert getattr(passwords, name) not in bus, f"the {name} password crossed the bus"


def test_protect_again_gives_a_file_written_before_the_service_to_its_group(
        pin_env, accounts):
    """Review F10: `owner protect` run before the service account existed writes the
    file 0600 root:root, which pinutild can never read; once the `pinutild` group
    exists, `protect` again gives it 0640 root:pinutild (the same passwords, nothing
    sent to the TPM but the check that it holds them), and the service account reads
    it. On the code before, the second protect said "already protected" and left it."""
    from tests.service.test_enrol_proof_process import SERVICE_UID, Shape

    passwords = protect(pin_env)  # no pinutild group on this machine
    st = os.stat(owner_file(pin_env))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600)
    Shape(pin_env, accounts)  # adds the account and group `pinutild`
    as_service = [*accounts.prefix(), *accounts.as_user(SERVICE_UID), "cat", owner_file(pin_env)]
    assert subprocess.run(as_service, capture_output=True, check=False).returncode != 0
    again = subprocess.run([*accounts.prefix(), PINUTIL, "--policy", pin_env.policy, "--json",
                            "owner", "protect"], capture_output=True, timeout=60, check=False,
                           env={}, cwd="/")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is True
    st = os.stat(owner_file(pin_env))
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, SERVICE_UID, 0o640)
    read = subprocess.run(as_service, capture_output=True, check=False)
    assert read.returncode == 0, read.stderr
    with open(owner_file(pin_env), encoding="ascii") as f:  # group pinutild: only there
        lines = dict(line.split() for line in f if not line.startswith("#"))
    assert bytes.fromhex(lines["owner"]) == passwords.owner
    # a third protect has nothing left to do
    third = subprocess.run([*accounts.prefix(), PINUTIL, "--policy", pin_env.policy, "--json",
                            "owner", "protect"], capture_output=True, timeout=60, check=False,
                           env={}, cwd="/")
    assert third.returncode == 0 and json.loads(third.stdout)["changed"] is False, third


# --- an open platform hierarchy voids the protection (review F2) ----------------------

PLATFORM_OPEN = (b"platform hierarchy open: owner protection can be bypassed by anyone "
                 b"with TPM access")


def test_status_and_protect_warn_while_the_platform_hierarchy_is_open(pin_env):
    """swtpm leaves the platform hierarchy enabled with an empty password (firmware
    normally closes it): then the owner protection can be bypassed, and `status` and
    `protect` say so. Closing it (TPM2_HierarchyControl, what firmware does) ends the
    warning. On the code before, neither said anything."""
    pin_env.enrol("root", PIN)
    done = pin_env.pinutil("--json", "owner", "protect")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["platform_open"] is True
    pin_env.swtpm.owner_auth = owner_auth.load(owner_file(pin_env)).owner  # for the oracle
    assert PLATFORM_OPEN in pin_env.pinutil("owner", "protect").stdout  # already protected
    assert status(pin_env)["owner_hierarchy"]["platform_open"] is True
    assert PLATFORM_OPEN in pin_env.pinutil("status", "root").stdout
    # what the warning is about: the platform deletes a PIN index without the owner
    handle = hex(handle_of("root"))
    assert refused(attack(pin_env, "tpm2_nvundefine", "-C", "o", handle))
    assert attack(pin_env, "tpm2_nvundefine", "-C", "p", handle).returncode == 0
    # closed until the next TPM reset, as firmware leaves it: no warning, no bypass
    pin_env.swtpm.tools("tpm2_hierarchycontrol", "-C", "p", "phEnable", "clear")
    assert status(pin_env)["owner_hierarchy"]["platform_open"] is False
    human = pin_env.pinutil("status", "root")
    assert human.returncode == 0 and PLATFORM_OPEN not in human.stdout, human
    again = pin_env.pinutil("owner", "protect")
    assert again.returncode == 0 and PLATFORM_OPEN not in again.stdout, again
    pin_env.enrol("root", PIN)
    assert attack(pin_env, "tpm2_nvundefine", "-C", "p", handle).returncode != 0
    assert handle_of("root") in pin_env.enrolled_handles()


# --- the lockout password is root's alone (review 2 G1) --------------------------------

def _lines(path: str) -> dict[str, str]:
    with open(path, encoding="ascii") as f:
        return dict(line.split() for line in f if line.strip() and not line.startswith("#"))


def test_the_service_can_read_the_owner_password_but_never_the_lockout_password(
        pin_env, accounts):
    """With a `pinutild` account, protect gives the service the owner password (0640
    root:pinutild) and keeps the lockout password in FILE.lockout, 0600 root:root:
    nothing the service's account can read holds it (with it a compromised pinutild
    could TPM2_Clear the owner hierarchy, other programs' keys too). On the code before,
    both lines were in the service's file."""
    from tests.service.test_enrol_proof_process import SERVICE_UID, Shape

    Shape(pin_env, accounts)  # adds the account and group `pinutild`
    done = subprocess.run([*accounts.prefix(), PINUTIL, "--policy", pin_env.policy,
                           "owner", "protect"], capture_output=True, timeout=60,
                          check=False, env={}, cwd="/")
    assert done.returncode == 0, done.stderr
    as_service = [*accounts.prefix(), *accounts.as_user(SERVICE_UID), "cat"]
    readable = subprocess.run([*as_service, owner_file(pin_env)], capture_output=True,
                              check=False)
    assert readable.returncode == 0, readable.stderr
    assert set(_lines(owner_file(pin_env))) == {"owner"}  # no `lockout` line
    lockout = owner_auth.lockout_path(owner_file(pin_env))
    st = os.stat(lockout)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600)
    assert set(_lines(lockout)) == {"lockout"}
    assert _lines(lockout)["lockout"].encode() not in readable.stdout
    assert subprocess.run([*as_service, lockout], capture_output=True,
                          check=False).returncode != 0
    assert permanent(pin_env)["lockoutAuthSet"] == 1


def test_a_file_of_the_layout_before_still_works_and_protect_moves_its_lockout_out(pin_env):
    """A FILE written before FILE.lockout existed (both lines in it) is read as it was:
    PIN commands and `owner release` work with it; `owner protect` moves its lockout
    line into FILE.lockout (same passwords, the TPM unchanged)."""
    passwords = protect(pin_env)
    path, lockout = owner_file(pin_env), owner_auth.lockout_path(owner_file(pin_env))
    write_file(path, f"owner {passwords.owner.hex()}\nlockout {passwords.lockout.hex()}\n",
               0o600)
    os.unlink(lockout)
    assert owner_auth.load(path) == passwords
    pin_env.enrol("root", PIN)
    assert pin_test(pin_env, PIN).returncode == 0
    again = pin_env.pinutil("--json", "owner", "protect")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is True, again
    assert _lines(path) == {"owner": passwords.owner.hex()}
    assert _lines(lockout) == {"lockout": passwords.lockout.hex()}
    assert owner_auth.load(path) == passwords
    released = pin_env.pinutil("--yes", "delete", "root")
    assert released.returncode == 0, released.stderr
    released = pin_env.pinutil("owner", "release")
    assert released.returncode == 0, released.stderr
    assert permanent(pin_env)["ownerAuthSet"] == permanent(pin_env)["lockoutAuthSet"] == 0
    assert not os.path.lexists(path) and not os.path.lexists(lockout)


def test_a_missing_lockout_file_is_a_clear_error_for_release(pin_env):
    protect(pin_env)
    os.unlink(owner_auth.lockout_path(owner_file(pin_env)))
    done = pin_env.pinutil("owner", "release")
    assert done.returncode == 9 and b"no lockout line" in done.stderr, done.stderr
    assert permanent(pin_env)["ownerAuthSet"] == permanent(pin_env)["lockoutAuthSet"] == 1
