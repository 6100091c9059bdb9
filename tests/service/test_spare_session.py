"""pinutild's spare salted session (pinutil/service/spare_session.py), watched on the
TPM transport through a proxy and in the TPM itself: the check after a prompt sends
only the index check and the PIN, every PIN still goes in a salted session of its
own (never one used before, never one of another user's check), and an idle or
departed service leaves no session in the TPM."""
from __future__ import annotations

import os
import time

from pinutil.service import spare_session
from pinutil.service.worker import Worker
from pinutil.users import User
from tests.support.pinutild import start_pinutild
from tests.support.tpm_proxy import (
    CC_NV_READ,
    CC_NV_READ_PUBLIC,
    CC_START_AUTH_SESSION,
    Reader,
    TpmProxy,
    parse_command,
)

PIN = "1234"
TPM_RH_NULL = 0x40000007
HMAC_SESSIONS = range(0x02000000, 0x03000000)


def _wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _sessions(swtpm) -> list[int]:
    return [h for h in swtpm.loaded_handles() if h in HMAC_SESSIONS]


def _is_pin_read(exchange) -> bool:
    """An NV_Read authorised by the index itself (the PIN), not by the owner."""
    if exchange.code != CC_NV_READ:
        return False
    (auth, index), _, _ = parse_command(exchange.command, 2)
    return auth == index


def _started_session(exchange) -> tuple[int, int, bytes]:
    """(tpmKey, bind, encryptedSalt) of a StartAuthSession command."""
    (key, bind), _, r = parse_command(exchange.command, 2)
    r.tpm2b()  # nonceCaller
    return key, bind, r.tpm2b()


def test_the_check_after_a_prompt_sends_only_the_index_check_and_the_pin(pin_env):
    pin_env.enrol("root", PIN)
    with TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.dir, "px")) as proxy:
        pin_env.write_policy(tcti=proxy.tcti)
        service = start_pinutild(pin_env)
        try:
            assert service.ask(verb="pin-status", user="root")["result"] == "success"
            # While the prompt is shown, the worker starts the check's session.
            _wait_for(lambda: [e for e in proxy.commands(CC_START_AUTH_SESSION)
                               if e.reply is not None])
            mark = len(proxy.exchanges)
            reply = service.ask(verb="pin-check", user="root", pin=PIN.encode())
        finally:
            service.stop()
    assert reply == {"result": "success"}
    check = proxy.exchanges[mark:]
    codes = [e.code for e in check]
    assert codes[:2] == [CC_NV_READ_PUBLIC, CC_NV_READ], [hex(c) for c in codes]
    # The PIN went in the session started while idle, salted with the salt key.
    spare = proxy.exchanges[:mark][-1]
    assert spare.code == CC_START_AUTH_SESSION
    key, bind, salt = _started_session(spare)
    assert key != TPM_RH_NULL and bind == TPM_RH_NULL and salt
    _, auths, _ = parse_command(check[1].command, 2)
    assert [a.handle for a in auths] == [Reader(spare.tpm_response).u32()]
    assert pin_env.counter("root") == (0, 3)


def test_every_pin_goes_in_a_salted_session_of_its_own(pin_env):
    """Wrong and right PINs of two users, each after its prompt: between two PIN reads
    exactly one session is started, salted, and the PIN read uses that one."""
    pin_env.enrol("root", PIN)
    pin_env.enrol("nobody", PIN)
    with TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.dir, "px")) as proxy:
        pin_env.write_policy(tcti=proxy.tcti)
        service = start_pinutild(pin_env)
        replies = []
        try:
            for user, pin in (("root", b"9999"), ("nobody", PIN.encode()),
                              ("root", PIN.encode()), ("nobody", b"8888"),
                              ("nobody", b"7777"), ("root", PIN.encode())):
                replies.append(service.ask(verb="pin-status", user=user)["result"])
                replies.append(service.ask(verb="pin-check", user=user, pin=pin)["result"])
        finally:
            service.stop()
    assert replies == ["success", "wrong_pin", "success", "success", "success", "success",
                       "success", "wrong_pin", "success", "wrong_pin", "success", "success"]
    since_last_pin = []
    pin_reads = 0
    last = max(i for i, e in enumerate(proxy.exchanges) if _is_pin_read(e))
    for exchange in proxy.exchanges[:last + 1]:  # (the next spare may be under way)
        if exchange.code == CC_START_AUTH_SESSION:
            key, bind, salt = _started_session(exchange)
            assert key != TPM_RH_NULL and bind == TPM_RH_NULL and salt
            since_last_pin.append(Reader(exchange.tpm_response).u32())
        elif _is_pin_read(exchange):
            _, auths, _ = parse_command(exchange.command, 2)
            assert len(since_last_pin) == 1, "not exactly one session for this PIN"
            assert [a.handle for a in auths] == since_last_pin
            since_last_pin = []
            pin_reads += 1
    assert pin_reads == 6
    assert pin_env.counter("root") == (0, 3)
    assert pin_env.counter("nobody") == (2, 3)


def test_a_spare_is_not_used_once_the_record_names_another_key(pin_env):
    """Root re-recorded the salt key (a cleared or replaced TPM) after the spare was
    started: the check refuses the TPM's key, as one without a spare does, and sends
    no PIN; the spare salted with the old key is flushed, never used."""
    from pinutil.pin import enrolment, salt_key

    other = bytes.fromhex("000b") + bytes(32)
    pin_env.enrol("root", PIN)
    # The record as if made under that key: the enrolment check (which refuses a record
    # made under another key, tests/test_salt_key_clear.py) lets the check reach the TPM.
    made = enrolment.read(pin_env.enrolment_dir, 0)
    enrolment.write(pin_env.enrolment_dir, made.replace(salt_key=other), as_root=True)
    with TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.dir, "px")) as proxy:
        pin_env.write_policy(tcti=proxy.tcti)
        service = start_pinutild(pin_env)
        try:
            assert service.ask(verb="pin-status", user="root")["result"] == "success"
            _wait_for(lambda: len(_sessions(pin_env.swtpm)) == 1)
            salt_key.save(os.path.join(pin_env.dir, "salt_key"), other)
            reply = service.ask(verb="pin-check", user="root", pin=PIN.encode())
        finally:
            service.stop()
    assert reply["result"] == "tpm_unavailable" and "salt key" in reply["error"], reply
    assert not [e for e in proxy.exchanges if _is_pin_read(e)]
    assert pin_env.counter("root") == (0, 3)
    _wait_for(lambda: pin_env.swtpm.loaded_handles() == [])


def test_an_idle_service_leaves_no_session_in_the_tpm(pin_env):
    """Socket-activated services leave when idle: the spare goes with them (without a
    resource manager, a session left behind would hold one of swtpm's 3 slots)."""
    pin_env.enrol("root", PIN)
    # Long enough to see the spare while idle, however busy the machine.
    service = start_pinutild(pin_env, "--idle-exit", "5")
    try:
        assert service.ask(verb="pin-status", user="root")["result"] == "success"
        _wait_for(lambda: len(_sessions(pin_env.swtpm)) == 1)  # the spare, while idle
        assert service.proc.wait(timeout=30) == 0
    finally:
        service.stop()
    assert pin_env.swtpm.loaded_handles() == []
    # The next service (socket activation's next start) checks PINs as before.
    service = start_pinutild(pin_env, name="again.sock")
    try:
        for _ in range(4):  # more than swtpm's 3 session slots
            assert service.ask(verb="pin-check", user="root",
                               pin=PIN.encode()) == {"result": "success"}
    finally:
        service.stop()
    # Its worker reads the end of its requests once the server is gone, and leaves.
    _wait_for(lambda: pin_env.swtpm.loaded_handles() == [])


def test_a_spare_nobody_asked_for_expires(pin_env, monkeypatch):
    pin_env.enrol("root", PIN)
    monkeypatch.setattr(spare_session, "SPARE_SECONDS", 3.0)  # the forked worker's copy
    worker = Worker(pin_env.policy)
    worker.start()
    try:
        worker.send("pin-status", User("root", 0), {"user": "root"})
        _wait_for(lambda: worker.receive() is not None)
        _wait_for(lambda: len(_sessions(pin_env.swtpm)) == 1)
        _wait_for(lambda: _sessions(pin_env.swtpm) == [], seconds=30)
        assert worker.running and os.waitpid(worker.pid, os.WNOHANG) == (0, 0)
    finally:
        worker.stop()
    assert pin_env.swtpm.loaded_handles() == []
