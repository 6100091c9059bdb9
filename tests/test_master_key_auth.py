"""The master key's service-only authorisation value (issue 10, point 5), attacked first.

Every key pinutil creates has a random authValue in the authorisation record
(pinutil/master_key/auth_record.py: the policy's `master_key_auth_file`, readable by
root and pinutild only). These tests try to get a token without it: raw TPM access
(tpm2-tools, our own SAPI HMAC with an empty authValue), a swapped key, a corrupt or
foreign record, a kill between creating the key and making it persistent. The old code
(empty authValue) gave the token to raw TPM access: test_raw_tpm_access_* failed there.
pinpam's keys (empty authValue, made by tpm2-tools) and its recovery files keep working.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pinutil.master_key import recovery
from pinutil.master_key.token import MASTER_KEY_HANDLE
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm
from pinutil.tpm.rc import TpmCommandError
from pinutil.tpm.sapi import SALT_KEY_HANDLE
from tests.support.accounts import AS_NOBODY
from tests.support.kill_point import KillAtCommand
from tests.support.tpm_proxy import TpmProxy
from tests.test_master_key import _MAIN_CODE, ROOT, Setup, software_token
from tests.test_master_key import setup as setup  # noqa: PLC0414 - the fixture
from tests.test_recovery import independent_seal

CC_EVICT_CONTROL = 0x120
TPM_RC_BAD_AUTH_SESSION_1 = 0x9A2


def _evict_with_tools(setup: Setup) -> None:
    setup.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-c", hex(MASTER_KEY_HANDLE))


# --- raw TPM access -------------------------------------------------------------------

def test_raw_tpm_access_cannot_hmac_with_a_new_key(setup):
    phrase = setup.init()
    secret = recovery.unseal(Path(setup.sealed).read_bytes(), phrase)
    # tpm2-tools, as a member of group tss would run it: refused by the TPM
    refused = setup.tools_hmac("alice", check=False)
    assert refused.returncode != 0 and refused.stdout == b""
    assert b"0x9A2" in refused.stderr  # TPM_RC_BAD_AUTH (session 1), not a tool error
    # our own SAPI HMAC, encrypted session and all, with an empty authValue: same RC
    with Tpm(setup.swtpm.tcti) as tpm:
        _, name = sapi.read_public(tpm, MASTER_KEY_HANDLE)
        session = sapi.start_unverified_salted_session(tpm)
        with pytest.raises(TpmCommandError) as refusal:
            sapi.hmac_with_session(tpm, MASTER_KEY_HANDLE, name, b"alice", b"", session)
        tpm.flush_quietly(session.handle)
    assert refusal.value.rc == TPM_RC_BAD_AUTH_SESSION_1
    # with the record (root or pinutild), the same key gives the recoverable token
    assert setup.token("alice") == software_token(secret, "alice")


def test_the_record_is_the_services_alone(setup):
    setup.init()
    st = os.stat(setup.auth_file)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid in (0, _service_uid())
    assert os.stat(os.path.dirname(setup.auth_file)).st_mode & 0o777 == 0o700
    status = json.loads(setup.cli("--json", "master-key", "status").stdout)
    assert status["tpm_auth"] == "recorded"


def _service_uid() -> int:
    import pwd

    try:
        return pwd.getpwnam("pinutild").pw_uid
    except KeyError:
        return 0


# --- the wrong key, the wrong record ----------------------------------------------------

def test_a_key_swapped_in_by_raw_tpm_access_gives_no_token(setup):
    """Someone with raw TPM access evicts our key and persists their own empty-auth
    HMAC key (whose secret they know) at the handle: every token from it would be
    theirs to compute. The record names our key: no token, a clear error."""
    setup.init()
    _evict_with_tools(setup)
    setup.pinpam_key(secrets.token_bytes(32))
    result = setup.cli("master-key", "get-user-token", "alice")
    assert result.returncode != 0 and result.stdout == b""
    assert b"not the one recorded in" in result.stderr
    status = json.loads(setup.cli("--json", "master-key", "status").stdout)
    assert status["in_tpm"] is True and status["tpm_auth"] == "mismatch"


def _corrupt_records(setup: Setup) -> dict[str, callable]:
    good = Path(setup.auth_file).read_bytes()

    def rewrite(data: bytes, mode: int = 0o600, uid: int = 0):
        def apply():
            path = Path(setup.auth_file)
            path.unlink()
            path.write_bytes(data)
            os.chmod(path, mode)
            os.chown(path, uid, 0)
        return apply

    def symlink():
        target = os.path.join(setup.workdir, "elsewhere")
        Path(target).write_bytes(good)
        os.chmod(target, 0o600)
        os.unlink(setup.auth_file)
        os.symlink(target, setup.auth_file)

    lines = good.decode().splitlines()
    other_auth = lines[1].split()[0] + " " + secrets.token_bytes(32).hex()
    return {
        "garbage": rewrite(b"\x00garbage\n"),
        "truncated": rewrite(good[:len(good) // 2]),
        "no header": rewrite("\n".join(lines[1:]).encode() + b"\n"),
        "owned by nobody": rewrite(good, uid=65534),
        "group-readable": rewrite(good, mode=0o640),
        "a symlink": symlink,
        "another authValue": rewrite(f"{lines[0]}\n{other_auth}\n".encode()),
    }


def test_a_corrupt_or_foreign_record_gives_a_clear_error_and_no_token(setup):
    setup.init()
    cases = _corrupt_records(setup)
    good = Path(setup.auth_file).read_bytes()
    for label, corrupt in cases.items():
        corrupt()
        result = setup.cli("master-key", "get-user-token", "alice")
        message = result.stderr.decode()
        assert result.returncode != 0 and result.stdout == b"", label
        assert "authorisation" in message, (label, message)
        assert "Traceback" not in message and message.count("\n") == 1, (label, message)
        if os.path.lexists(setup.auth_file):
            os.unlink(setup.auth_file)
        Path(setup.auth_file).write_bytes(good)
        os.chmod(setup.auth_file, 0o600)
        os.chown(setup.auth_file, 0, 0)
        assert setup.cli("master-key", "get-user-token", "alice").returncode == 0, label


# --- pinpam's keys and files ----------------------------------------------------------

def test_pinpams_empty_auth_key_gives_the_same_tokens_and_import_protects_it(setup):
    secret = secrets.token_bytes(32)
    setup.pinpam_key(secret)
    assert setup.token("alice") == software_token(secret, "alice")  # no record: empty auth
    status = json.loads(setup.cli("--json", "master-key", "status").stdout)
    assert status["tpm_auth"] == "empty"
    # pinpam's recovery file for the same secret: import gives the key an authValue
    phrase = recovery.new_phrase()
    os.makedirs(os.path.dirname(setup.sealed), mode=0o700)
    with open(setup.sealed, "wb") as f:
        f.write(independent_seal(secret, phrase))
    os.chmod(setup.sealed, 0o600)
    setup.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-c", "0x81000080")  # free a slot
    result = setup.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(setup.cli("--json", "master-key", "status").stdout)["tpm_auth"] == \
        "recorded"
    assert setup.token("alice") == software_token(secret, "alice")
    assert setup.tools_hmac("alice", check=False).returncode != 0  # no longer raw-derivable
    # again: nothing to change
    result = setup.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0 and b"already holds" in result.stdout


# --- a kill between creating the key and making it persistent ----------------------------

def _killed_cli(setup: Setup, nth: int, *args: str, stdin: str = "") -> None:
    """Run `pinutil --policy P args` through a proxy that kills it at its nth
    EvictControl; then free what it left loaded (swtpm has no resource manager)."""
    kill = KillAtCommand(CC_EVICT_CONTROL, nth)
    proxy = TpmProxy(setup.swtpm.sock, os.path.join(setup.swtpm.state_dir, "px"), kill)
    proxy.start()
    policy = os.path.join(setup.workdir, "policy-proxy")
    Path(policy).write_text(Path(setup.policy).read_text().replace(setup.swtpm.tcti,
                                                                    proxy.tcti))
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", _MAIN_CODE, ROOT, "/nonexistent", "--policy",
             policy, *args], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
        kill.pid = child.pid
        child.communicate(stdin.encode(), timeout=120)
        assert child.returncode == -signal.SIGKILL and kill.seen == nth
    finally:
        proxy.stop()
    for kind in ("-t", "-s"):
        setup.swtpm.tools("tpm2_flushcontext", kind)


@pytest.mark.parametrize("setup", ["direct"], indirect=True)  # the proxy is the CLI's
def test_killed_before_the_key_is_persistent_the_recovery_file_recovers(setup):
    phrase = setup.init()
    secret = recovery.unseal(Path(setup.sealed).read_bytes(), phrase)
    setup.cli("--yes", "master-key", "clear-from-tpm")
    _killed_cli(setup, 1, "--stdin", "master-key", "import", stdin=phrase + "\n")
    assert MASTER_KEY_HANDLE not in setup.persistent_handles()
    result = setup.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0, result.stderr
    assert setup.token("alice") == software_token(secret, "alice")


@pytest.mark.parametrize("setup", ["direct"], indirect=True)  # the proxy is the CLI's
def test_killed_while_replacing_the_old_key_keeps_working(setup):
    """init --replace killed at its first EvictControl (the old key's eviction): the old
    key stays, and its record line too, so its tokens are still given."""
    setup.init()
    old_token = setup.token("alice")
    _killed_cli(setup, 1, "--yes", "master-key", "init", "--replace")
    assert setup.token("alice") == old_token


@pytest.mark.parametrize("setup", ["direct"], indirect=True)
@pytest.mark.parametrize("nth", [1, 2], ids=["old-key-kept", "no-key-left"])
def test_killed_while_protecting_a_pinpam_key(setup, nth):
    """import over pinpam's empty-auth key of the same secret replaces it by one with an
    authValue: two EvictControls. Killed at the first, pinpam's key keeps giving its
    tokens (the record keeps a line for it, with its empty authValue); killed at the
    second (no key left), importing again brings it back."""
    secret = secrets.token_bytes(32)
    setup.pinpam_key(secret)
    setup.swtpm.tools("tpm2_evictcontrol", "-C", "o", "-c", "0x81000080")  # free a slot
    phrase = recovery.new_phrase()
    recovery.write_sealed_file(setup.sealed, independent_seal(secret, phrase))
    _killed_cli(setup, nth, "--stdin", "master-key", "import", stdin=phrase + "\n")
    if nth == 1:
        assert setup.token("alice") == software_token(secret, "alice")
    else:
        assert MASTER_KEY_HANDLE not in setup.persistent_handles()
    result = setup.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0, result.stderr
    assert setup.token("alice") == software_token(secret, "alice")
    assert json.loads(setup.cli("--json", "master-key", "status").stdout)["tpm_auth"] == \
        "recorded"


# --- through the service ----------------------------------------------------------------

def test_a_non_root_peer_is_refused_before_any_tpm_command(pin_env, pinutild):
    sealed = os.path.join(pin_env.dir, "sealed_master_key")
    pin_env.write_policy(master_key_file=sealed)
    assert pin_env.pinutil("--yes", "--json", "master-key", "init").returncode == 0
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"))
    proxy.start()
    try:
        pin_env.write_policy(master_key_file=sealed, tcti=proxy.tcti)
        reply = pinutild.ask(AS_NOBODY, verb="master-key-token", user="nobody")
        assert reply["result"] == "permission_denied" and "token" not in reply
        assert proxy.exchanges == []
        assert pinutild.ask(verb="master-key-token", user="nobody")["result"] == "success"
        assert proxy.exchanges
    finally:
        proxy.stop()


def test_the_service_gives_no_token_from_a_corrupt_record(pin_env, pinutild):
    sealed = os.path.join(pin_env.dir, "sealed_master_key")
    pin_env.write_policy(master_key_file=sealed)
    assert pin_env.pinutil("--yes", "--json", "master-key", "init").returncode == 0
    auth_file = os.path.join(pin_env.dir, "pinutild", "master_key_auth")
    assert pinutild.ask(verb="master-key-token", user="nobody")["result"] == "success"
    os.chown(auth_file, 65534, 65534)
    reply = pinutild.ask(verb="master-key-token", user="nobody")
    assert reply["result"] != "success" and "token" not in reply
    assert "authorisation record" in reply["error"]


# --- with a protected owner hierarchy ----------------------------------------------------

def test_with_a_protected_owner_hierarchy_the_whole_life_cycle_works(setup):
    """`pinutil owner protect` first, no persistent salt key: every step that makes a
    key of the owner hierarchy (the key's parent, EvictControl, the token's salt key)
    takes the owner password, direct and through the service."""
    with open(setup.policy, "a") as f:
        f.write(f"owner_auth_file = {setup.workdir}/owner-auth\n")
    done = setup.cli("--json", "owner", "protect")
    assert done.returncode == 0, done.stderr
    assert SALT_KEY_HANDLE not in setup.persistent_handles()
    phrase = setup.init()
    secret = recovery.unseal(Path(setup.sealed).read_bytes(), phrase)
    assert setup.token("alice") == software_token(secret, "alice")
    assert setup.cli("--yes", "master-key", "clear-from-tpm").returncode == 0
    done = setup.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert done.returncode == 0, done.stderr
    assert setup.token("alice") == software_token(secret, "alice")


# --- the record's place: state_dir, and `migrate-state` from the old default ---------

def test_a_record_in_the_old_default_place_is_moved_to_the_state_dir(swtpm, tmp_path):
    """An install whose record is where the default was before it followed `state_dir`
    (here a stand-in for /var/lib/pinutild/master_key_auth) and whose policy sets a
    `state_dir` but no `master_key_auth_file`: the record is looked for in state_dir,
    so tokens fail (closed: the TPM refuses the HMAC) until `migrate-state` moves it
    (auth_record.move_legacy); then the same tokens come back."""
    from pinutil.master_key import auth_record
    from pinutil.pin.policy import load_policy

    os.chmod(tmp_path, 0o755)
    setup = Setup(swtpm, str(tmp_path))
    old = setup.auth_file
    phrase = setup.init()
    secret = recovery.unseal(Path(setup.sealed).read_bytes(), phrase)
    text = Path(setup.policy).read_text().replace(f"master_key_auth_file = {old}\n", "")
    assert f"state_dir = {tmp_path}/state\n" in text  # Setup's own
    Path(setup.policy).write_text(text)
    new = load_policy(setup.policy).master_key_auth_file
    assert new == f"{tmp_path}/state/master_key_auth"
    assert setup.cli("master-key", "get-user-token", "alice").returncode != 0
    report: dict = {"moved": [], "kept": [], "problems": []}
    auth_record.move_legacy(new, report, old=old)
    assert report == {"moved": [f"{old} -> {new}"], "kept": [], "problems": []}
    assert not os.path.lexists(old)
    assert setup.token("alice") == software_token(secret, "alice")
    auth_record.move_legacy(new, report, old=old)  # again: nothing more
    assert len(report["moved"]) == 1 and not report["kept"] and not report["problems"]


def test_moving_the_record_never_overwrites_nor_trusts_a_bad_one(tmp_path):
    """A record already in the new place wins and the old one stays (it holds a key's
    authValue); an old one others may read is neither moved nor removed."""
    from pinutil.master_key import auth_record

    old, new = str(tmp_path / "old" / "master_key_auth"), str(tmp_path / "new" / "master_key_auth")
    first, second = {b"\x00\x0b" + b"1" * 32: b"a" * 32}, {b"\x00\x0b" + b"2" * 32: b"b" * 32}
    auth_record.save(old, first)
    auth_record.save(new, second)
    report: dict = {"moved": [], "kept": [], "problems": []}
    auth_record.move_legacy(new, report, old=old)
    assert report["kept"] and not report["moved"] and not report["problems"]
    assert auth_record.load(old) == first and auth_record.load(new) == second
    os.unlink(new)
    os.chmod(old, 0o644)
    report = {"moved": [], "kept": [], "problems": []}
    auth_record.move_legacy(new, report, old=old)
    assert report["problems"] and not report["moved"]
    assert os.path.exists(old) and not os.path.lexists(new)
