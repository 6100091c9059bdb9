"""The master key's token on the TPM bus (issue 10): the TPM hands it back encrypted.

A TPM proxy (tests/support/tpm_proxy.py) sits between the code and a real swtpm and
keeps every byte both ways, as a bus interposer would. While a token is derived (in
process, and through pinutild) the token
must appear nowhere in that transcript: neither its 32 raw bytes nor its hex. The
control, tpm2-tools' own `tpm2_hmac` (a password session) through the same proxy,
shows the transcript does see a token sent in clear. A key with an authValue leaves
neither it nor its secret on the bus, and an answer altered on its way back gives no
token at all (the response HMAC). The old token path (an HMAC in a password session)
failed every test here but the control (and returned a wrong token for an altered
answer).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess

import pytest

from pinutil.errors import TpmUnavailable
from pinutil.master_key import auth_record
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


def test_a_key_with_an_authvalue_neither_its_secret_nor_its_authvalue_cross_the_bus(swtpm):
    """A key made the service's way, through the proxy from the start: its secret and
    authValue go to the TPM only inside Create's encrypted parameter, and the token
    request sends neither (the authValue keys the session's HMAC, it is never sent)."""
    auth_path = os.path.join(swtpm.state_dir, "record", "master_key_auth")
    secret = secrets.token_bytes(32)
    with TpmProxy(swtpm.sock, os.path.join(swtpm.state_dir, "px")) as proxy:
        with Tpm(proxy.tcti) as tpm:
            MasterKeyAdmin(tpm, auth_path=auth_path).load_secret(secret)
        token = user_token(proxy.tcti, USER, auth_path=auth_path)
        assert token == _software_token(secret, USER).hex()
        _assert_not_on_the_bus(proxy, bytes.fromhex(token))
        (auth,) = auth_record.load(auth_path).values()
        bus = _transcript(proxy)
    assert len(auth) == 32 and auth not in bus and auth.hex().encode() not in bus
    assert secret not in bus


def test_a_forged_hmac_answer_gives_no_token(keyed_tpm):
    """Whoever can alter the TPM's answers changes the encrypted token on its way back:
    the response HMAC no longer checks out, and no token (a wrong one least of all)
    comes out."""
    secret, proxy = keyed_tpm

    def flip_a_token_bit(command: bytes, forward):
        reply = forward(command)
        if command_code(command) == CC_HMAC and len(reply) > 20:
            # header 10, parameterSize 4, outHMAC.size 2: the first masked token byte
            reply = reply[:16] + bytes([reply[16] ^ 1]) + reply[17:]
        return reply

    proxy.intercept = flip_a_token_bit
    with pytest.raises(TpmUnavailable, match="failed its HMAC check"):
        user_token(proxy.tcti, USER)
    proxy.intercept = lambda command, forward: forward(command)
    assert user_token(proxy.tcti, USER) == _software_token(secret, USER).hex()
