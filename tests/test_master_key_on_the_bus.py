"""The master key's token on the TPM bus (issue 10): the TPM hands it back encrypted.

A TPM proxy (tests/support/tpm_proxy.py) sits between the code and a real swtpm and
keeps every byte both ways, as a bus interposer would. While a token is derived (in
process, and through pinutild) the token
must appear nowhere in that transcript: neither its 32 raw bytes nor its hex. The
control, tpm2-tools' own `tpm2_hmac` (a password session) through the same proxy,
shows the transcript does see a token sent in clear. The old token path (an HMAC in a
password session) failed every test here but the control.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess

import pytest

from pinutil.errors import TpmUnavailable
from pinutil.master_key.lifecycle import MasterKeyAdmin
from pinutil.master_key.token import MASTER_KEY_HANDLE, MasterKey, user_token
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm
from tests.support.swtpm import tools_env
from tests.support.tpm_proxy import TpmProxy, command_code

CC_HMAC = 0x155
USER = "alice"


def _software_token(secret: bytes, user: str) -> bytes:
    return hmac.new(secret, user.encode(), hashlib.sha256).digest()


def _transcript(proxy: TpmProxy) -> bytes:
    return b"".join(e.command + (e.reply or b"") for e in proxy.exchanges)


def _assert_not_on_the_bus(proxy: TpmProxy, token: bytes) -> None:
    hmac_commands = [e for e in proxy.exchanges if command_code(e.command) == CC_HMAC]
    assert hmac_commands and all(e.forwarded for e in hmac_commands), \
        "the token was not derived through the proxy"
    bus = _transcript(proxy)
    assert token not in bus
    assert token.hex().encode() not in bus


@pytest.fixture
def keyed_tpm(swtpm):
    """A swtpm holding a master key whose secret the test knows, and a proxy before it."""
    secret = secrets.token_bytes(32)
    with Tpm(swtpm.tcti) as tpm:
        MasterKeyAdmin(tpm).load_secret(secret)
    proxy = TpmProxy(swtpm.sock, os.path.join(swtpm.state_dir, "px"))
    proxy.start()
    try:
        yield secret, proxy
    finally:
        proxy.stop()


def test_the_token_is_encrypted_on_the_bus(keyed_tpm):
    secret, proxy = keyed_tpm
    token = user_token(proxy.tcti, USER)
    assert token == _software_token(secret, USER).hex()
    _assert_not_on_the_bus(proxy, bytes.fromhex(token))


def test_a_password_session_shows_the_token_on_the_bus_control(keyed_tpm, swtpm):
    """tpm2-tools' tpm2_hmac through the same proxy: the transcript sees the token."""
    secret, proxy = keyed_tpm
    done = subprocess.run(["tpm2_hmac", "-c", hex(MASTER_KEY_HANDLE), "-g", "sha256"],
                          input=USER.encode(), env=tools_env(proxy.tcti),
                          capture_output=True, timeout=30, check=True, cwd=swtpm.state_dir)
    token = _software_token(secret, USER)
    assert done.stdout == token
    assert token in _transcript(proxy)


def test_the_service_gets_the_token_encrypted(pin_env, pinutild):
    secret = secrets.token_bytes(32)
    with Tpm(pin_env.swtpm.tcti) as tpm:
        MasterKeyAdmin(tpm).load_secret(secret)
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"))
    proxy.start()
    try:
        pin_env.write_policy(tcti=proxy.tcti)
        reply = pinutild.ask(verb="master-key-token", user="nobody")  # an existing account
        token = _software_token(secret, "nobody")
        assert reply == {"result": "success", "token": token.hex()}
        _assert_not_on_the_bus(proxy, token)
    finally:
        proxy.stop()


def test_a_recorded_salt_key_is_required_when_given(keyed_tpm):
    """With the salt key's recorded Name the session is salted with that key only: a
    TPM offering another key (here: a recorded Name that is not this TPM's) gets no
    HMAC command at all."""
    secret, proxy = keyed_tpm
    with Tpm(proxy.tcti) as tpm:
        name = sapi.salt_key_name(tpm, persist=True)
        assert MasterKey(tpm, salt_key_name=name).token_for(USER) == \
            _software_token(secret, USER).hex()
        proxy.clear()
        wrong = name[:-1] + bytes([name[-1] ^ 1])
        with pytest.raises(TpmUnavailable, match="salt key is not the recorded one"):
            MasterKey(tpm, salt_key_name=wrong).token_for(USER)
    assert not proxy.commands(CC_HMAC)
