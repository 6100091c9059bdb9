"""master-key-token through a real pinutild: root callers get the user's keyring token
(the same HMAC the recovery phrase gives), nobody else does, not even a set-uid root
host started by a user; and a master_key login through the service loads no TPM code.
The whole keyring stack also runs through the service (tests/test_master_key_stack.py)."""
from __future__ import annotations

import hashlib
import hmac
import json
import os

from pinutil.master_key import recovery
from tests.support.accounts import AS_NOBODY, SU_LIKE
from tests.support.pamhost import PAM_PYPAM_SO
from tests.support.pinutild import tpm_code


def _init_master_key(pin_env) -> bytes:
    sealed = os.path.join(pin_env.dir, "sealed_master_key")
    pin_env.write_policy(master_key_file=sealed)
    done = pin_env.pinutil("--yes", "--json", "master-key", "init")
    assert done.returncode == 0, done.stderr
    phrase = json.loads(done.stdout)["recovery_phrase"]
    return recovery.unseal(recovery.read_sealed_file(sealed), phrase)


def _token(secret: bytes, user: str) -> str:
    return hmac.new(secret, user.encode(), hashlib.sha256).hexdigest()


def test_root_gets_the_token(pin_env, pinutild):
    secret = _init_master_key(pin_env)
    for user in ("root", "nobody"):
        reply = pinutild.ask(verb="master-key-token", user=user)
        assert reply == {"result": "success", "token": _token(secret, user)}


def test_no_one_else_gets_a_token(pin_env, pinutild):
    _init_master_key(pin_env)
    for caller in (AS_NOBODY, SU_LIKE):
        for user in ("nobody", "root"):
            reply = pinutild.ask(caller, verb="master-key-token", user=user)
            assert reply["result"] == "permission_denied" and "token" not in reply


def test_without_a_master_key(pin_env, pinutild):
    reply = pinutild.ask(verb="master-key-token", user="root")
    assert reply["result"] != "success" and "token" not in reply


def test_the_keyring_module_through_the_service_loads_no_tpm_code(pin_env, pinutild_policy):
    """pam_permit decides; master_key then sets the token (through the service: the
    policy names its socket); what a keyring module would see, and what was loaded."""
    secret = _init_master_key(pin_env)
    tokens, modules = pin_env.record_file("authtok.jsonl"), pin_env.record_file("mods.jsonl")
    svc = pin_env.service(
        "keyring", "auth required pam_permit.so",
        f"auth optional {PAM_PYPAM_SO} module=master_key policy={pin_env.policy}",
        pin_env.test_module_line("record_authtok", f"record={tokens}"),
        pin_env.test_module_line("record_modules", f"record={modules}"))
    report = pin_env.run(svc, user="nobody")
    assert report["exit_status"] == 0
    with open(tokens, encoding="utf-8") as f:
        assert json.loads(f.readline()) == {"authtok": _token(secret, "nobody"), "user": "nobody"}
    with open(modules, encoding="utf-8") as f:
        loaded = json.loads(f.readline())
    assert "pinutil.service.client" in loaded
    assert tpm_code(loaded) == []
