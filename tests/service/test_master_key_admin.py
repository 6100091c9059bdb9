"""The master key's administration through a real pinutild (issue 10, point 5).

`pinutil master-key ...` run by root uses the service when its socket exists: here
its policy names a TPM that does not exist, so every command that works proves it went
through the service (which alone reaches the swtpm). The service creates the key with
an authValue only root and it can read; non-root peers are refused every admin verb
before any TPM command (a TPM proxy's transcript stays empty). Oracles without
pinutil: the token recomputed in software from the recovery file and the phrase
(`cryptography`, tests/test_master_key.py), tpm2-tools for the TPM's handles and its
refusal without the authValue.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from pinutil.master_key.token import MASTER_KEY_HANDLE
from pinutil.tpm.sapi import SALT_KEY_HANDLE
from tests.support.accounts import AS_NOBODY, SU_LIKE
from tests.support.tpm_proxy import TpmProxy
from tests.test_master_key import _MAIN_CODE, ROOT, recover_secret, software_token

ADMIN_VERBS = [
    {"verb": "master-key-status"},
    {"verb": "master-key-load", "secret": bytes(32), "replace": True},
    {"verb": "master-key-clear"},
    {"verb": "master-key-token", "user": "nobody"},
]


class ServiceCli:
    """`pinutil` as root with a policy of its own: no usable TPM, the service's socket."""

    def __init__(self, pin_env, pinutild) -> None:
        self.env = pin_env
        self.sealed = os.path.join(pin_env.dir, "cli", "sealed_master_key")
        self.policy = os.path.join(pin_env.dir, "cli-policy")
        with open(self.policy, "w") as f:
            f.write(f"tcti = swtpm:path={pin_env.dir}/no-tpm\n"
                    f"master_key_file = {self.sealed}\n"
                    f"master_key_auth_file = {pin_env.dir}/cli/no-record\n"
                    f"service_socket = {pinutild.socket}\n")
        os.chmod(self.policy, 0o644)

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-I", "-c", _MAIN_CODE, ROOT, "/nonexistent", "--policy",
             self.policy, *args], input=stdin.encode(), capture_output=True, cwd=ROOT,
            env={"PATH": "/usr/bin:/bin"}, timeout=120, check=False)

    def json(self, *args: str, stdin: str = "") -> dict:
        done = self.run("--json", *args, stdin=stdin)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def handles(self) -> list[int]:
        """The TPM's persistent handles but the salt key's (pin_env records it)."""
        out = self.env.swtpm.tools("tpm2_getcap", "handles-persistent").stdout.decode()
        found = [int(line.strip().lstrip("- "), 16) for line in out.splitlines() if line.strip()]
        return [h for h in found if h != SALT_KEY_HANDLE]


def test_non_root_peers_get_no_admin_verb_and_the_tpm_hears_nothing(pin_env, pinutild):
    cli = ServiceCli(pin_env, pinutild)
    cli.json("--yes", "master-key", "init")
    handles = cli.handles()
    record = Path(pin_env.dir, "pinutild", "master_key_auth").read_bytes()
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"))
    proxy.start()
    try:
        pin_env.write_policy(tcti=proxy.tcti)
        for caller in (AS_NOBODY, SU_LIKE):
            for request in ADMIN_VERBS:
                reply = pinutild.ask(caller, **request)
                assert reply["result"] == "permission_denied", (caller, request, reply)
                assert set(reply) == {"result", "error"}, reply
        assert proxy.exchanges == []
    finally:
        proxy.stop()
    assert cli.handles() == handles
    assert Path(pin_env.dir, "pinutild", "master_key_auth").read_bytes() == record


def test_the_whole_life_cycle_through_the_service(pin_env, pinutild):
    cli = ServiceCli(pin_env, pinutild)
    status = cli.json("master-key", "status")
    assert status["in_tpm"] is False and status["tpm_auth"] is None
    phrase = cli.json("--yes", "master-key", "init")["recovery_phrase"]
    secret = recover_secret(cli.sealed, phrase)
    assert cli.handles() == [MASTER_KEY_HANDLE]
    status = cli.json("master-key", "status")
    assert status["in_tpm"] is True and status["tpm_auth"] == "recorded"
    assert status["file_present"] is True
    for user in ("nobody", "root"):
        assert cli.json("master-key", "get-user-token", user)["token"] == \
            software_token(secret, user)
    # the service made it: raw TPM access without the service's record is refused
    refused = pin_env.swtpm.tools("tpm2_hmac", "-c", hex(MASTER_KEY_HANDLE), "-g",
                                  "sha256", input=b"nobody", check=False)
    assert refused.returncode != 0 and b"0x9A2" in refused.stderr
    assert not os.path.exists(os.path.join(pin_env.dir, "cli", "no-record"))
    # init again refuses; import of the same file changes nothing
    done = cli.run("--yes", "master-key", "init")
    assert done.returncode == 1 and b"already in the TPM" in done.stderr
    done = cli.run("--stdin", "master-key", "import", stdin=phrase + "\n")
    assert done.returncode == 0 and b"already holds" in done.stdout
    # clear, then import the recovery file: the same tokens, a new authValue
    assert cli.json("--yes", "master-key", "clear-from-tpm")["removed"] is True
    assert cli.handles() == []
    assert not os.path.exists(os.path.join(pin_env.dir, "pinutild", "master_key_auth"))
    assert cli.json("--stdin", "master-key", "import", stdin=phrase + "\n")["loaded"] is True
    assert cli.json("master-key", "get-user-token", "nobody")["token"] == \
        software_token(secret, "nobody")
    # replace: a new secret, every token changes, one key in the TPM
    new_phrase = cli.json("--yes", "master-key", "init", "--replace")["recovery_phrase"]
    new_secret = recover_secret(cli.sealed, new_phrase)
    assert new_secret != secret and cli.handles() == [MASTER_KEY_HANDLE]
    assert cli.json("master-key", "get-user-token", "nobody")["token"] == \
        software_token(new_secret, "nobody")


def test_a_different_key_is_not_overwritten_through_the_service(pin_env, pinutild):
    cli = ServiceCli(pin_env, pinutild)
    cli.json("--yes", "master-key", "init")
    token = cli.json("master-key", "get-user-token", "nobody")["token"]
    reply = pinutild.ask(verb="master-key-load", secret=secrets.token_bytes(32),
                         replace=False)
    assert reply["result"] == "master_key_error" and "different master key" in reply["error"]
    assert cli.json("master-key", "get-user-token", "nobody")["token"] == token
    reply = pinutild.ask(verb="master-key-load", secret=b"short", replace=True)
    assert reply["result"] == "master_key_error"
    assert cli.json("master-key", "get-user-token", "nobody")["token"] == token
