"""The enrolment conversation against hostile clients: one that never answers, one
that cuts its frame short, one that announces a huge frame, a PAM stack that talks too
much, a service killed in the middle. None of them enrols anything, stalls another
user's PIN login, or takes the service down."""
from __future__ import annotations

import os
import signal

import pytest

from pinutil.service import protocol
from tests.service.enrol_support import (
    PASSWORD,
    PIN,
    PIN2,
    UID,
    USER,
    as_user,
    converse,
    finish,
    hostile,
    next_line,
    running_in_namespace,
)
from tests.support.pin_env import NV_BASE

HANDLE = NV_BASE + UID
SETUP = protocol.encode({"verb": "pin-setup", "user": USER})


@pytest.fixture
def service(pin_env, accounts, syslog_capture):
    accounts.add_user(USER, UID, PASSWORD)
    pin_env.enrol("root", PIN)  # the other user, whose logins must keep working
    with running_in_namespace(pin_env, accounts) as made:
        yield made


def others_log_in(pin_env, service, times: int = 3) -> None:
    for _ in range(times):
        assert service.ask(verb="pin-check", user="root", pin=PIN.encode()) == \
            {"result": "success"}
    assert pin_env.counter("root") == (0, 3)


def nothing_enrolled(pin_env) -> bool:
    return (HANDLE not in pin_env.enrolled_handles()
            and not os.path.exists(os.path.join(pin_env.enrolment_dir, str(UID))))


def test_a_client_that_never_answers_the_password_stalls_nobody(pin_env, service):
    client = hostile(service.socket, [("send", SETUP), ("read",), ("hold",), ("close",)],
                     as_user())
    assert next_line(client)["style"] == "echo_off"  # pam_unix asks, and waits
    others_log_in(pin_env, service)  # meanwhile, other logins go on
    assert client.poll() is None  # still waiting: the proof did not give up on it
    assert finish(client) == []  # it leaves: the proof ends, nothing is enrolled
    assert nothing_enrolled(pin_env)
    others_log_in(pin_env, service, 1)


def test_a_client_that_never_answers_the_new_pin_stalls_nobody(pin_env, service):
    """Root's client (no proof) holds the new-PIN prompt."""
    client = hostile(service.socket, [("send", SETUP), ("read",), ("hold",)])
    assert next_line(client) == {"prompt": "New PIN: ", "style": "new_pin"}
    others_log_in(pin_env, service)
    assert client.poll() is None
    finish(client)
    assert nothing_enrolled(pin_env)
    others_log_in(pin_env, service, 1)


@pytest.mark.parametrize("answer", [
    (100).to_bytes(4, "big") + b"\x01\x01\x06answer",  # announces 100 bytes, sends 10
    (0xFFFFFFFF).to_bytes(4, "big"),  # announces 4 GiB
    (protocol.MAX_BODY + 1).to_bytes(4, "big") + b"x" * 64,
    b"\x00\x00\x00\x04\x09\x00\x00\x00",  # a bad version
    protocol.encode({"answer": PASSWORD}),  # text, not bytes
    protocol.encode({"answer": PASSWORD.encode(), "more": 1}),
], ids=["truncated", "huge", "over_max", "bad_version", "wrong_type", "extra_field"])
@pytest.mark.parametrize("as_root", [False, True], ids=["password", "new_pin"])
def test_a_broken_answer_enrols_nothing_and_harms_nobody(pin_env, service, answer, as_root):
    """Broken frames where the password (the proof process reads them) or the new PIN
    (pinutild reads them) is expected."""
    client = hostile(service.socket, [("send", SETUP), ("read",), ("send", answer),
                                      ("close",)], [] if as_root else as_user())
    assert next_line(client)["style"] == ("new_pin" if as_root else "echo_off")
    finish(client)
    others_log_in(pin_env, service, 1)
    assert nothing_enrolled(pin_env)
    assert service.alive()
    # The service still enrols properly.
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER},
                     [PIN] if as_root else [PASSWORD, PIN], [] if as_root else as_user())
    assert reply["reply"]["result"] == "success"


def test_a_pam_stack_that_talks_too_much_is_cut_off(pin_env, service, accounts):
    chatter = "".join(f"auth optional pam_echo.so line {n}\n" for n in range(12))
    accounts.write_service("pinutil", chatter + "auth required pam_unix.so\n"
                                                "account required pam_unix.so\n")
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                     as_user())
    assert reply["reply"]["result"] == "cancelled", reply
    assert len(reply["prompts"]) == 8  # proof.MAX_PROMPTS
    assert nothing_enrolled(pin_env)
    others_log_in(pin_env, service, 1)


@pytest.mark.parametrize("stage", ["password", "new_pin"])
def test_a_killed_service_loses_no_enrolment(pin_env, service, stage):
    """Killed while a setup waits for its user: no index, no record; an existing PIN
    (root's, and the user's own when they try a second setup) survives."""
    as_root = stage == "new_pin"
    if as_root:  # the user has a PIN, which root's client tries to enrol again
        assert converse(service.socket, {"verb": "pin-setup", "user": USER},
                        [PIN])["reply"]["result"] == "success"
    client = hostile(service.socket, [("send", SETUP), ("read",), ("hold",), ("read",)],
                     [] if as_root else as_user())
    next_line(client)
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait()
    assert finish(client) == [{"eof": True}]
    service.start()
    others_log_in(pin_env, service, 1)
    if as_root:
        assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
        assert converse(service.socket, {"verb": "pin-check", "user": USER,
                                         "pin": PIN.encode()}, [], as_user())["reply"] == \
            {"result": "success"}
    else:
        assert nothing_enrolled(pin_env)
        reply = converse(service.socket, {"verb": "pin-setup", "user": USER},
                         [PASSWORD, PIN2], as_user())
        assert reply["reply"]["result"] == "success"


def test_one_password_proof_per_user_at_a_time(pin_env, service, accounts):
    """A user whose proof waits for their password cannot start another (each holds a
    root process: with 16 of them one user held every slot of the proof socket and
    blocked everyone's enrolment, review F7); another user enrols meanwhile; once the
    first proof has its verdict, the user may start a setup again."""
    other, other_uid, other_password = "pinutilother", UID + 1, "an0ther pa55word"
    accounts.add_user(other, other_uid, other_password)
    first = hostile(service.socket, [("send", SETUP), ("read",), ("hold",),
                                     ("send", protocol.encode({"answer": b"wrong"})),
                                     ("read",)], as_user())
    assert next_line(first)["style"] == "echo_off"
    second = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                      as_user())
    assert second["prompts"] == [], second  # refused before any proof: no prompt
    assert second["reply"]["result"] == "permission_denied", second
    assert "already running" in second["reply"]["error"]
    meanwhile = converse(service.socket, {"verb": "pin-setup", "user": other},
                         [other_password, PIN2], as_user(other_uid))
    assert meanwhile["reply"]["result"] == "success", meanwhile
    assert first.poll() is None  # the first proof still waits for its password
    assert finish(first)[0]["result"] == "wrong_password"  # read after its proof ended
    assert nothing_enrolled(pin_env)
    again = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                     as_user())
    assert again["reply"]["result"] == "success", again
