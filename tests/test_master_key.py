"""The master key against a real swtpm: tokens, restart, migration, refusals, CLI.

Oracles that share no code with `pinutil.master_key` (token.py, lifecycle.py): the token is checked against
`hmac` computed in software from the secret that `cryptography` (Argon2id + AES-GCM,
written out in tests/test_recovery.py) recovers from the sealed file with the phrase;
the TPM's persistent handles and the key's Name are read with tpm2-tools; a key put in
place by tpm2-tools alone (as pinpam's would be) must give the same tokens.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pinutil.errors import MasterKeyError
from pinutil.master_key import lifecycle, recovery
from pinutil.master_key.lifecycle import MasterKeyAdmin
from pinutil.master_key.token import MASTER_KEY_HANDLE, MasterKey, user_token
from pinutil.tpm.context import Tpm
from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import Pinutild
from tests.support.swtpm import Swtpm, fresh_swtpm
from tests.test_recovery import independent_seal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USERS = ["alice", "root", "zoë", "a" * 300]
# `python -I` does not put the source tree on sys.path: the runner does.
_MAIN_CODE = (
    "import sys; sys.path.insert(0, sys.argv[1]); from pinutil.cli.app import main; "
    "sys.exit(main(sys.argv[3:], policy_path=sys.argv[2]))"
)


def software_token(secret: bytes, user: str) -> str:
    return hmac.new(secret, user.encode(), hashlib.sha256).hexdigest()


def recover_secret(path: str, phrase: str) -> bytes:
    """The secret out of a sealed file, with cryptography directly (no pinutil)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    doc = json.loads(Path(path).read_bytes())
    key = Argon2id(salt=base64.b64decode(doc["salt_b64"]), length=32, iterations=3,
                   lanes=1, memory_cost=32768).derive(phrase.encode())
    return AESGCM(key).decrypt(base64.b64decode(doc["nonce_b64"]),
                               base64.b64decode(doc["ciphertext_b64"]), None)


class Setup:
    """One swtpm, one policy file and a place for the recovery file; with `service`, a
    real pinutild on that policy too, whose socket the policy names, so that every
    `pinutil master-key` command goes through the service."""

    def __init__(self, swtpm: Swtpm, workdir: str, service: bool = False) -> None:
        self.swtpm = swtpm
        self.workdir = workdir
        self.sealed = os.path.join(workdir, "pinpam", "sealed_master_key")
        self.auth_file = os.path.join(workdir, "pinutild", "master_key_auth")
        self.policy = os.path.join(workdir, "policy")
        # Never the machine's own /run/pinutild.sock: a socket of our own, started or not.
        socket_path = os.path.join(workdir, "pinutild.sock" if service else "no-pinutild.sock")
        with open(self.policy, "w") as f:
            # state_dir too: nothing this policy's commands write may reach the
            # machine's /var/lib/pinutild (the salt key's record goes there).
            f.write(f"tcti = {swtpm.tcti}\nmaster_key_file = {self.sealed}\n"
                    f"master_key_auth_file = {self.auth_file}\n"
                    f"state_dir = {workdir}/state\n"
                    f"service_socket = {socket_path}\n")
        os.chmod(self.policy, 0o644)
        self.service = Pinutild(self.policy, socket_path) if service else None
        if self.service is not None:
            self.service.start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()

    def cli(self, *args: str, stdin: str = "", as_nobody: bool = False,
            policy: str | None = None) -> subprocess.CompletedProcess:
        policy = policy or self.policy
        if as_nobody:  # the policy only as main()'s default: --policy is root-only
            cmd = [*AS_NOBODY, sys.executable, "-I", "-c", _MAIN_CODE, ROOT, policy, *args]
        else:
            cmd = [sys.executable, "-I", "-c", _MAIN_CODE, ROOT, "/nonexistent",
                   "--policy", policy, *args]
        return subprocess.run(cmd, input=stdin.encode(), capture_output=True, cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin"}, timeout=120,
                              start_new_session=True, check=False)

    def init(self, *extra: str) -> str:
        """`master-key init --yes`; returns the phrase printed on stdout."""
        result = self.cli("--yes", "--json", "master-key", "init", *extra)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["recovery_phrase"]

    def token(self, user: str) -> str:
        result = self.cli("master-key", "get-user-token", user)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode().rstrip("\n")

    # -- out of band (tpm2-tools) --------------------------------------------------
    def persistent_handles(self) -> list[int]:
        out = self.swtpm.tools("tpm2_getcap", "handles-persistent").stdout.decode()
        return [int(line.strip().lstrip("- "), 16) for line in out.splitlines()
                if line.strip()]

    def key_name(self) -> bytes | None:
        """The Name of the object at 0x81000081 (changes with the secret), or None."""
        if MASTER_KEY_HANDLE not in self.persistent_handles():
            return None
        name_file = os.path.join(self.workdir, "name.bin")
        self.swtpm.tools("tpm2_readpublic", "-c", hex(MASTER_KEY_HANDLE), "-n", name_file)
        return Path(name_file).read_bytes()

    def pinpam_key(self, secret: bytes) -> None:
        """pinpam's layout, with tpm2-tools only: RSA SRK at 0x81000080, the HMAC key
        imported under it (TPM2_Import) at 0x81000081 with an empty authValue."""
        # tpm2-tools run in the simulator's state dir, which the fixture removes
        with open(os.path.join(self.swtpm.state_dir, "secret.bin"), "wb") as f:
            f.write(secret)
        tools = self.swtpm.tools
        flush = ("tpm2_flushcontext", "-t")  # no resource manager: free object slots
        tools("tpm2_createprimary", "-C", "o", "-G", "rsa", "-c", "srk.ctx")
        tools("tpm2_evictcontrol", "-C", "o", "-c", "srk.ctx", "0x81000080")
        tools(*flush)
        tools("tpm2_import", "-C", "0x81000080", "-G", "hmac", "-i", "secret.bin",
              "-u", "k.pub", "-r", "k.priv")
        tools(*flush)
        tools("tpm2_load", "-C", "0x81000080", "-u", "k.pub", "-r", "k.priv", "-c", "k.ctx")
        tools("tpm2_evictcontrol", "-C", "o", "-c", "k.ctx", hex(MASTER_KEY_HANDLE))
        tools(*flush)

    def tools_hmac(self, user: str, auth: bytes | None = None,
                   check: bool = True) -> subprocess.CompletedProcess:
        """tpm2-tools' HMAC with the key, with `auth` as its authValue (or none)."""
        password = ["-p", f"hex:{auth.hex()}"] if auth else []
        return self.swtpm.tools("tpm2_hmac", "-c", hex(MASTER_KEY_HANDLE), "-g", "sha256",
                                *password, input=user.encode(), check=check)

    def recorded_auth(self) -> bytes:
        """The one authValue in the authorisation record (read here, not by pinutil)."""
        lines = Path(self.auth_file).read_text().splitlines()
        assert lines[0] == "pinutil-master-key-auth 1" and len(lines) == 2, lines
        name, auth = lines[1].split()
        assert bytes.fromhex(name) == self.key_name()
        return bytes.fromhex(auth)


@pytest.fixture(params=["direct", "service"])
def setup(request, swtpm):
    """Each test twice: `pinutil` reaching the TPM itself, and through pinutild."""
    workdir = tempfile.mkdtemp(prefix="pypam-mk-", dir="/tmp")
    os.chmod(workdir, 0o755)
    made = None
    try:
        made = Setup(swtpm, workdir, service=request.param == "service")
        yield made
    finally:
        if made is not None:
            made.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def second_swtpm():
    """A second, fresh TPM (another machine's) for migration tests."""
    yield from fresh_swtpm()


# --- tokens ---------------------------------------------------------------------------

def test_token_is_hmac_of_the_secret_recovered_from_the_file(setup):
    assert setup.persistent_handles() == []
    phrase = setup.init()
    assert len(phrase.split()) == 24
    secret = recover_secret(setup.sealed, phrase)
    for user in USERS:
        token = setup.token(user)
        assert token == software_token(secret, user)
        assert len(token) == 64 and token == token.lower()
        # tpm2-tools agrees, given the recorded authValue; without it the TPM refuses
        assert setup.tools_hmac(user, setup.recorded_auth()).stdout.hex() == token
        refused = setup.tools_hmac(user, check=False)
        assert refused.returncode != 0 and refused.stdout == b""
    # exactly one persistent handle: no SRK kept in the TPM
    assert setup.persistent_handles() == [MASTER_KEY_HANDLE]
    st = os.stat(setup.sealed)
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == 0
    assert os.stat(os.path.dirname(setup.sealed)).st_mode & 0o777 == 0o700


def test_token_is_stable_across_a_tpm_restart(setup):
    phrase = setup.init()
    before = {user: setup.token(user) for user in USERS[:2]}
    setup.swtpm.stop()
    setup.swtpm.start()
    after = {user: setup.token(user) for user in USERS[:2]}
    assert after == before
    assert after["alice"] == software_token(recover_secret(setup.sealed, phrase), "alice")


def test_import_into_a_fresh_tpm_gives_the_same_tokens(setup, second_swtpm):
    phrase = setup.init()
    tokens = {user: setup.token(user) for user in USERS}
    other = Setup(second_swtpm, setup.workdir)  # same recovery file, other TPM
    other.policy = os.path.join(setup.workdir, "policy2")
    with open(other.policy, "w") as f:
        f.write(f"tcti = {second_swtpm.tcti}\nmaster_key_file = {setup.sealed}\n"
                f"master_key_auth_file = {setup.workdir}/pinutild2/master_key_auth\n"
                f"state_dir = {setup.workdir}/state2\n")
    assert other.cli("master-key", "get-user-token", "alice").returncode != 0
    result = other.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0, result.stderr
    assert {user: other.token(user) for user in USERS} == tokens
    # importing again is a no-op, not an error
    result = other.cli("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert result.returncode == 0 and b"already holds" in result.stdout


def test_an_independently_sealed_file_imports(setup):
    secret = secrets.token_bytes(32)
    phrase = recovery.new_phrase()
    os.makedirs(os.path.dirname(setup.sealed), mode=0o700)
    with open(setup.sealed, "wb") as f:
        f.write(independent_seal(secret, phrase))
    os.chmod(setup.sealed, 0o600)
    result = setup.cli("master-key", "import", "--stdin", stdin=phrase + "\n")
    assert result.returncode == 0, result.stderr
    assert setup.token("alice") == software_token(secret, "alice")


def test_a_key_made_by_tpm2_tools_under_an_rsa_srk_gives_the_same_tokens(setup):
    """pinpam's layout (RSA SRK at 0x81000080, HMAC key at 0x81000081, imported with
    TPM2_Import), built with tpm2-tools only: our token path must work on a key we
    did not create."""
    secret = secrets.token_bytes(32)
    setup.pinpam_key(secret)
    with Tpm(setup.swtpm.tcti) as tpm:
        key = MasterKeyAdmin(tpm)
        assert key.exists()
        assert key.holds(secret)
        for user in USERS:
            assert key.token_for(user) == software_token(secret, user)


# --- refusals that change nothing -----------------------------------------------------

def _corruptions(data: bytes) -> dict[str, bytes]:
    doc = json.loads(data)
    tampered = dict(doc)
    raw = bytearray(base64.b64decode(doc["ciphertext_b64"]))
    raw[0] ^= 0x80
    tampered["ciphertext_b64"] = base64.b64encode(bytes(raw)).decode()
    return {
        "truncated": data[: len(data) // 2],
        "tampered": json.dumps(tampered).encode(),
        "version 2": json.dumps({**doc, "version": 2}).encode(),
        "garbage": b"\x00garbage",
        "bad base64": json.dumps({**doc, "salt_b64": "***"}).encode(),
    }


@pytest.mark.parametrize("tpm_has_key", [False, True], ids=["empty-tpm", "other-key"])
def test_bad_phrase_or_file_changes_nothing_in_the_tpm(setup, tpm_has_key):
    phrase = setup.init()
    good = Path(setup.sealed).read_bytes()
    if not tpm_has_key:
        with Tpm(setup.swtpm.tcti) as tpm:
            assert MasterKeyAdmin(tpm).clear()
    handles, name = setup.persistent_handles(), setup.key_name()
    cases = [("wrong phrase", good, recovery.new_phrase()),
             ("mistyped phrase", good, phrase.replace(phrase.split()[3], "zzzz", 1))]
    cases += [(label, data, phrase) for label, data in _corruptions(good).items()]
    for label, data, typed in cases:
        with open(setup.sealed, "wb") as f:
            f.write(data)
        result = setup.cli("--stdin", "master-key", "import", stdin=typed + "\n")
        assert result.returncode == 1, label
        message = result.stderr.decode()
        assert message.startswith("pinutil: ") and message.count("\n") == 1, label
        assert "Traceback" not in message and typed not in message, label
        assert setup.persistent_handles() == handles, label
        assert setup.key_name() == name, label


def test_import_refuses_to_overwrite_a_different_key(setup):
    setup.init()
    name = setup.key_name()
    other_phrase = recovery.new_phrase()
    other = os.path.join(setup.workdir, "other")
    recovery.write_sealed_file(other, recovery.seal(secrets.token_bytes(32), other_phrase))
    result = setup.cli("--stdin", "master-key", "import", "--file", other,
                       stdin=other_phrase + "\n")
    assert result.returncode == 1 and b"different master key" in result.stderr
    assert setup.key_name() == name


def test_init_refuses_when_a_key_or_file_exists_unless_replace(setup):
    phrase = setup.init()
    token = setup.token("alice")
    result = setup.cli("--yes", "master-key", "init")
    assert result.returncode == 1 and b"already in the TPM" in result.stderr
    with Tpm(setup.swtpm.tcti) as tpm:
        MasterKeyAdmin(tpm).clear()
    result = setup.cli("--yes", "master-key", "init")
    assert result.returncode == 1 and b"already exists" in result.stderr
    assert recover_secret(setup.sealed, phrase)  # the file was not touched
    new_phrase = setup.init("--replace")
    assert new_phrase != phrase
    new_token = setup.token("alice")
    assert new_token != token
    assert new_token == software_token(recover_secret(setup.sealed, new_phrase), "alice")
    # --replace over a key in the TPM too
    newer = setup.init("--replace")
    assert setup.token("alice") == software_token(recover_secret(setup.sealed, newer),
                                                  "alice")
    assert setup.persistent_handles() == [MASTER_KEY_HANDLE]


def test_a_foreign_object_at_the_handle_is_never_used_or_evicted(setup):
    tools = setup.swtpm.tools
    flush = ("tpm2_flushcontext", "-t")
    tools("tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "p.ctx")
    tools(*flush)
    tools("tpm2_create", "-C", "p.ctx", "-G", "ecc", "-u", "r.pub", "-r", "r.priv")
    tools(*flush)
    tools("tpm2_load", "-C", "p.ctx", "-u", "r.pub", "-r", "r.priv", "-c", "r.ctx")
    tools("tpm2_evictcontrol", "-C", "o", "-c", "r.ctx", hex(MASTER_KEY_HANDLE))
    tools(*flush)
    name = setup.key_name()
    for args in (["--yes", "master-key", "init"], ["--yes", "master-key", "init", "--replace"],
                 ["--yes", "master-key", "clear-from-tpm"],
                 ["master-key", "get-user-token", "alice"]):
        result = setup.cli(*args)
        assert result.returncode != 0, args
        assert setup.key_name() == name, args
    assert b"not an HMAC-SHA256 key" in setup.cli("--yes", "master-key", "init").stderr


# --- the other commands ---------------------------------------------------------------

def test_status_and_clear_commands(setup):
    result = setup.cli("--json", "master-key", "status")
    status = json.loads(result.stdout)
    assert status["in_tpm"] is False and status["file_present"] is False
    setup.init()
    status = json.loads(setup.cli("master-key", "status", "--json").stdout)
    assert status["in_tpm"] is True and status["file_present"] is True
    assert isinstance(status["file_created_unix_ms"], int)
    assert status["tpm_handle"] == "0x81000081"
    # declined confirmations change nothing
    assert setup.cli("--stdin", "master-key", "clear-from-tpm", stdin="n\n").returncode == 5
    assert setup.cli("--stdin", "master-key", "clear-from-disk", stdin="\n").returncode == 5
    assert setup.persistent_handles() == [MASTER_KEY_HANDLE]
    assert os.path.exists(setup.sealed)
    assert setup.cli("--stdin", "master-key", "clear-from-tpm", stdin="y\n").returncode == 0
    assert setup.persistent_handles() == []
    assert setup.cli("--yes", "master-key", "clear-from-disk").returncode == 0
    assert not os.path.exists(setup.sealed)
    status = json.loads(setup.cli("--json", "master-key", "status").stdout)
    assert status["in_tpm"] is False and status["file_present"] is False
    result = setup.cli("--yes", "master-key", "clear-from-tpm")
    assert result.returncode == 0 and b"nothing changed" in result.stdout


def test_status_reports_an_unreachable_tpm_without_failing(setup):
    setup.init()
    setup.swtpm.stop()
    status = json.loads(setup.cli("--json", "master-key", "status").stdout)
    assert status["in_tpm"] is None and status["tpm_error"]
    assert status["file_present"] is True


@pytest.mark.parametrize("args", [
    ["master-key", "get-user-token", "alice"],
    ["--yes", "master-key", "init"],
    ["master-key", "status"],
    ["--yes", "master-key", "clear-from-tpm"],
])
def test_non_root_is_refused_before_any_tpm_command(setup, args):
    setup.init()
    # A policy whose TPM nobody could reach anyway would hide the rule; this one
    # points at the live swtpm, whose socket nobody may not even open: the refusal
    # must be the permission rule (exit 6), not "TPM unavailable" (exit 9).
    result = setup.cli(*args, as_nobody=True)
    assert result.returncode == 6, result.stderr
    assert b"only root may manage the master key" in result.stderr
    assert result.stdout == b""
    assert setup.persistent_handles() == [MASTER_KEY_HANDLE]


def test_no_option_takes_the_phrase_on_the_command_line():
    from pinutil.cli.app import build_parser

    assert not any("phrase" in option for option in _all_options(build_parser()))


def _all_options(parser):
    import argparse

    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_options(sub)


# --- costs and the login path -----------------------------------------------------------

def test_token_module_imports_no_admin_code():
    """The login path's module, alone in a fresh interpreter: no lifecycle or recovery
    code, no OpenSSL (hashlib), no tpm2_pytss."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import pinutil.master_key.token; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('cryptography', 'tpm2_pytss', 'hashlib', 'pypam') or m in "
            "('pinutil.master_key.recovery', 'pinutil.master_key.lifecycle')]; print(bad)")
    out = subprocess.run([sys.executable, "-I", "-c", code, ROOT], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_token_path_cost(setup, capsys):
    phrase = setup.init()
    secret = recover_secret(setup.sealed, phrase)
    with Tpm(setup.swtpm.tcti) as tpm:
        key = MasterKey(tpm, auth_path=setup.auth_file)
        t0 = time.perf_counter()
        for _ in range(20):
            assert key.token_for("alice") == software_token(secret, "alice")
        per_token_ms = (time.perf_counter() - t0) / 20 * 1000
    t0 = time.perf_counter()
    assert user_token(setup.swtpm.tcti, "alice", auth_path=setup.auth_file) == \
        software_token(secret, "alice")
    open_and_token_ms = (time.perf_counter() - t0) * 1000
    with capsys.disabled():
        print(f"\n[cost] token_for {per_token_ms:.3f} ms; Tpm()+token {open_and_token_ms:.2f} ms")


def test_init_and_import_cost(setup, capsys):
    t0 = time.perf_counter()
    phrase = setup.init()
    init_ms = (time.perf_counter() - t0) * 1000
    with Tpm(setup.swtpm.tcti) as tpm:
        MasterKeyAdmin(tpm).clear()
    t0 = time.perf_counter()
    lifecycle.import_master_key(lifecycle.direct_key(setup.swtpm.tcti, setup.auth_file),
                                setup.sealed, phrase)
    import_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    recovery.unseal(Path(setup.sealed).read_bytes(), phrase)
    argon_ms = (time.perf_counter() - t0) * 1000
    with capsys.disabled():
        print(f"\n[cost] init (CLI process) {init_ms:.0f} ms; import (in-process) "
              f"{import_ms:.0f} ms; of which unseal (Argon2id) {argon_ms:.0f} ms")


def test_user_names_the_tpm_cannot_take_are_refused(setup):
    setup.init()
    with Tpm(setup.swtpm.tcti) as tpm:
        key = MasterKey(tpm, auth_path=setup.auth_file)
        for user in ("", "a\0b", "x" * 1025):
            with pytest.raises(MasterKeyError):
                key.token_for(user)
        assert key.token_for("x" * 1024)
