"""pin-login, a PAM host's whole PIN login on one connection, against a real pinutild
and swtpm, from raw sockets: each test plays a client that tries to get more than one
PIN checked, a success without the right PIN, or an attempt spent without a PIN. The
TPM's counter is read out of band (tpm2-tools) after every story.

The flow (docs/pinutild.md): request {verb: pin-login, user} -> a refusal at once, or
the prompt frame -> the client's answer frame {answer: PIN} -> the verdict. Through
tpm_pin and libpam: tests/test_tpm_pin_module.py and the other `backend` tests."""
from __future__ import annotations

import socket

import pytest

from pinutil.service import protocol
from tests.service.test_throttle_service import WRONG as THROTTLE_WRONG
from tests.service.test_throttle_service import enrol as enrol_with_limit
from tests.service.test_throttle_service import start as start_with_file_clock
from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import start_pinutild

PIN, WRONG = "1234", "9999"
FIRST_PROMPT = {"prompt": "PIN: ", "style": "echo_off"}


def begin(path: str, **fields) -> socket.socket:
    """A connection that has sent its pin-login request."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)  # a guard against a hang, never reached when the service works
    sock.connect(path)
    sock.sendall(protocol.encode({"verb": "pin-login", **fields}))
    return sock


def next_frame(sock: socket.socket) -> dict | None:
    """The next frame the service sends; None when it closes the connection first."""
    header = _exactly(sock, protocol.HEADER_SIZE)
    if header is None:
        return None
    body = _exactly(sock, protocol.body_length(header))
    return None if body is None else protocol.decode_body(body)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def answer(pin: str | bytes) -> bytes:
    return protocol.encode({"answer": pin.encode() if isinstance(pin, str) else pin})


def login(path: str, pin: str, **fields) -> tuple[dict | None, dict | None]:
    """A whole well-behaved login: (the first frame, the verdict or None)."""
    with begin(path, user="root", **fields) as sock:
        first = next_frame(sock)
        if first is None or "result" in first:
            return first, None
        sock.sendall(answer(pin))
        verdict = next_frame(sock)
        assert next_frame(sock) is None  # one verdict, then the service closes
        return first, verdict


def test_a_login_is_one_connection(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    assert login(pinutild.socket, PIN) == (FIRST_PROMPT, {"result": "success"})
    assert pin_env.counter("root") == (0, 3)


def test_a_wrong_pin_spends_exactly_one_attempt(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    prompt, verdict = login(pinutild.socket, WRONG)
    assert prompt == FIRST_PROMPT
    assert verdict["result"] == "wrong_pin" and verdict["attempts_left"] == 2, verdict
    assert pin_env.counter("root") == (1, 3)
    # The next login's prompt says so; the right PIN then resets the counter.
    assert login(pinutild.socket, PIN) == (
        {"prompt": "PIN (2 attempts left): ", "style": "echo_off"}, {"result": "success"})
    assert pin_env.counter("root") == (0, 3)


@pytest.mark.parametrize("leave", ["close", "shutdown", "half_an_answer"])
def test_a_client_that_leaves_at_the_prompt_spends_nothing(pin_env, pinutild, leave):
    pin_env.enrol("root", PIN)
    for _ in range(4):  # more than the PIN's 3 attempts
        with begin(pinutild.socket, user="root") as sock:
            assert next_frame(sock) == FIRST_PROMPT
            if leave == "shutdown":
                sock.shutdown(socket.SHUT_WR)
                assert next_frame(sock) is None  # no verdict: nothing was checked
            elif leave == "half_an_answer":
                sock.sendall(answer(WRONG)[:-2])
    # A whole login after them: they were served (the loop is one thread) and spent nothing.
    assert login(pinutild.socket, PIN) == (FIRST_PROMPT, {"result": "success"})
    assert pin_env.counter("root") == (0, 3)


@pytest.mark.parametrize(("answers", "verdict"), [
    ((WRONG, PIN), "wrong_pin"),  # a second guess in the same connection is not checked
    ((PIN, WRONG), "success"),
    ((WRONG, WRONG, WRONG, PIN), "wrong_pin"),
])
def test_one_pin_per_login_however_many_answers(pin_env, pinutild, answers, verdict):
    pin_env.enrol("root", PIN)
    with begin(pinutild.socket, user="root") as sock:
        assert next_frame(sock) == FIRST_PROMPT
        sock.sendall(b"".join(answer(a) for a in answers))
        assert next_frame(sock)["result"] == verdict
        assert next_frame(sock) is None  # then it closes: no second prompt, no second check
    assert pin_env.counter("root") == ((1, 3) if verdict == "wrong_pin" else (0, 3))


BROKEN_ANSWERS = {
    "text_not_bytes": protocol.encode({"answer": PIN}),
    "extra_field": protocol.encode({"answer": PIN.encode(), "user": "root"}),
    "named_pin": protocol.encode({"pin": PIN.encode()}),
    "a_reply_frame": protocol.encode({"result": "success"}),
    "a_new_request": protocol.encode({"verb": "pin-check", "user": "root",
                                      "pin": PIN.encode()}),
    "empty": protocol.encode({"answer": b""}),
    "not_a_pin": protocol.encode({"answer": b"12a4"}),
    "bad_version": b"\x00\x00\x00\x04\x09\x00\x00\x00",
    "huge": (0xFFFFFFFF).to_bytes(4, "big"),
    "truncated": (100).to_bytes(4, "big") + b"\x01\x01\x06answer",
}


@pytest.mark.parametrize("broken", sorted(BROKEN_ANSWERS))
def test_a_broken_answer_never_logs_in_nor_spends(pin_env, pinutild, broken):
    pin_env.enrol("root", PIN)
    with begin(pinutild.socket, user="root") as sock:
        assert next_frame(sock) == FIRST_PROMPT
        sock.sendall(BROKEN_ANSWERS[broken])
        if broken == "truncated":
            sock.shutdown(socket.SHUT_WR)
        verdict = next_frame(sock)
    assert verdict is None or verdict["result"] in ("bad_request", "invalid_pin"), verdict
    assert pin_env.counter("root") == (0, 3)
    assert login(pinutild.socket, PIN) == (FIRST_PROMPT, {"result": "success"})


def test_refusals_come_at_once_without_a_prompt(pin_env, pinutild):
    path = pinutild.socket
    assert login(path, PIN)[0]["result"] == "not_enrolled"
    pin_env.enrol("root", PIN)
    assert login(path, PIN, on_behalf_of=65534)[0]["result"] == "pin_not_offered"
    assert pinutild.ask(AS_NOBODY, verb="pin-login", user="root")["result"] \
        == "permission_denied"
    with begin(path, user="no-such-user-x") as sock:
        assert next_frame(sock)["result"] == "unknown_user"
    for _ in range(3):
        login(path, WRONG)
    assert pin_env.counter("root") == (3, 3)
    assert login(path, PIN)[0]["result"] == "locked"
    assert pin_env.counter("root") == (3, 3)


def test_an_unrecorded_index_is_not_offered(pin_env, pinutild):
    import os

    pin_env.enrol("root", PIN)
    os.unlink(os.path.join(pin_env.enrolment_dir, "0"))
    assert login(pinutild.socket, PIN)[0]["result"] == "enrolment_mismatch"
    assert pin_env.counter("root") == (0, 3)


def test_a_throttled_user_is_not_asked_for_a_pin(pin_env):
    """After three wrong PINs in a row the delay runs (its clock is the test's file):
    pin-login refuses at once, before the prompt; once the delay is over it prompts."""
    service, clock = start_with_file_clock(pin_env)
    try:
        enrol_with_limit(pin_env, "root")
        for _ in range(3):
            assert service.ask(verb="pin-check", user="root",
                               pin=THROTTLE_WRONG)["result"] == "wrong_pin"
        first, verdict = login(service.socket, PIN)
        assert first["result"] == "throttled" and verdict is None, first
        clock.advance(60)
        assert login(service.socket, PIN) == (
            {"prompt": "PIN (7 attempts left): ", "style": "echo_off"}, {"result": "success"})
    finally:
        service.stop()


def test_an_answer_after_the_prompt_timeout_is_never_checked(pin_env):
    """The service waits --pin-prompt-timeout for the PIN, then closes: nothing is tried,
    and a PIN sent later reaches nobody."""
    pin_env.enrol("root", PIN)
    service = start_pinutild(pin_env, "--pin-prompt-timeout", "0.5")
    try:
        with begin(service.socket, user="root") as sock:
            assert next_frame(sock) == FIRST_PROMPT
            assert next_frame(sock) is None  # the service gave up waiting and closed
            try:
                sock.sendall(answer(WRONG))
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert next_frame(sock) is None
        assert pin_env.counter("root") == (0, 3)
        assert service.alive()
    finally:
        service.stop()


def test_the_pin_is_in_no_log(pin_env, pinutild):
    secret = "80417"  # in nothing else the service or the test prints
    pin_env.enrol("root", secret)
    assert login(pinutild.socket, secret) == (FIRST_PROMPT, {"result": "success"})
    assert login(pinutild.socket, "80471")[1]["result"] == "wrong_pin"
    with begin(pinutild.socket, user="root") as sock:  # and a broken answer
        assert next_frame(sock)["style"] == "echo_off"
        sock.sendall(protocol.encode({"answer": secret.encode(), "x": 1}))
        assert next_frame(sock)["result"] == "bad_request"
    pinutild.stop()
    output = pinutild.output()
    assert secret not in output and "80471" not in output


# A root process where the policy's service_socket points, playing a service that does
# pin-login wrongly (argv: socket, repository, behaviour). Root is trusted as a service
# (the client's peer check passes), so only the client's own rules stand between it
# and a PAM_SUCCESS for the wrong reasons.
_FAKE_SERVICE = """
import os, socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
behaviour = sys.argv[3]
prompt = protocol.encode({"prompt": "PIN: ", "style": "echo_off"})
success = protocol.encode({"result": "success"})
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    if behaviour == "success_at_once":
        conn.sendall(success)
    elif behaviour == "old_status_reply":
        conn.sendall(protocol.encode({"result": "success", "enrolled": True, "failures": 0,
                                      "limit": 3, "locked": False, "attempts_left": 3}))
    elif behaviour == "two_prompts":
        conn.sendall(prompt)
        conn.recv(65536)
        conn.sendall(prompt)
        conn.recv(65536)
        conn.sendall(success)
    elif behaviour == "new_pin_prompt":
        conn.sendall(protocol.encode({"prompt": "New PIN: ", "style": "new_pin"}))
        conn.recv(65536)
        conn.sendall(success)
    elif behaviour == "success_with_more":
        conn.sendall(prompt)
        conn.recv(65536)
        conn.sendall(protocol.encode({"result": "success", "enrolled": True}))
    conn.close()
"""


@pytest.mark.parametrize(("behaviour", "prompts"), [
    ("success_at_once", 0), ("old_status_reply", 0), ("two_prompts", 1),
    ("new_pin_prompt", 0), ("success_with_more", 1)])
def test_the_module_believes_only_a_verdict_on_the_pin_it_sent(pin_env, behaviour, prompts):
    from tests.support.pamhost import result_name
    from tests.support.pinutild import login_through_stand_in

    pin_env.enrol("root", PIN)
    report = login_through_stand_in(pin_env, _FAKE_SERVICE, [behaviour], f"fake-{behaviour}",
                                    [WRONG])
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL", report
    assert report["conv_calls"] == prompts
