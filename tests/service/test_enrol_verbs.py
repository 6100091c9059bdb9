"""pin-setup, pin-change and pin-delete through a real pinutild (root here; the
production shape, pinutild as its own account with the root proof process, is in
test_enrol_proof_process.py), on a real swtpm, with the real pam_unix checking a test
user's password from a private /etc/shadow (tests/support/accounts.py), and callers of
other uids (setpriv). Attacker tests first: none of them may enrol, change or delete a
PIN, and none may spend an attempt of another user."""
from __future__ import annotations

import os

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
    raw_exchange,
    read_frame,
    running_in_namespace,
)
from tests.support.pin_env import NV_BASE
from tests.support.syslog_capture import AUTHPRIV

HANDLE = NV_BASE + UID
NOTICE, WARNING = (AUTHPRIV, 5), (AUTHPRIV, 4)


@pytest.fixture
def service(pin_env, accounts, syslog_capture):
    accounts.add_user(USER, UID, PASSWORD)
    with running_in_namespace(pin_env, accounts) as made:
        yield made


def setup(service, answers, user=USER, who=None):
    return converse(service.socket, {"verb": "pin-setup", "user": user}, answers,
                    as_user() if who is None else who)


def audit(syslog_capture) -> list:
    syslog_capture.sync()
    return [((line.facility, line.severity), line.message) for line in syslog_capture.lines()
            if line.ident == "pinutil"]


def by_user(action: str, result: str) -> str:
    return f"{action} by {USER} (uid {UID}) for {USER} (uid {UID}): {result}"


def record_exists(pin_env) -> bool:
    return os.path.exists(os.path.join(pin_env.enrolment_dir, str(UID)))


# --- attackers ------------------------------------------------------------------------

def test_a_client_cannot_claim_the_proof(pin_env, service, syslog_capture):
    """A `password_proven` field (or any other) in the request or the PIN's answer is
    refused whole; no index, no record."""
    for fields in ({"password_proven": True}, {"pin": PIN.encode()}, {"proven": True}):
        reply = converse(service.socket, {"verb": "pin-setup", "user": USER, **fields},
                         [], as_user())
        assert reply["reply"]["result"] == "bad_request", reply
        assert reply["prompts"] == []
    assert HANDLE not in pin_env.enrolled_handles() and not record_exists(pin_env)


def test_an_answer_claiming_the_proof_is_refused(pin_env, service):
    """Root gets the new-PIN prompt without a proof; an answer frame with a second field
    is refused, and so is a user's PIN sent where the password is asked."""
    sock = raw_exchange(service.socket, [protocol.encode({"verb": "pin-setup", "user": USER})])
    assert read_frame(sock) == {"prompt": "New PIN: ", "style": "new_pin"}
    sock.sendall(protocol.encode({"answer": PIN.encode(), "password_proven": True}))
    assert read_frame(sock)["result"] == "bad_request"
    sock.close()
    assert HANDLE not in pin_env.enrolled_handles()


def test_the_pin_in_place_of_the_password_enrols_nothing(pin_env, service, syslog_capture):
    reply = setup(service, [PIN, PIN])
    assert reply["prompts"][0][1] == "echo_off"  # pam_unix's Password:
    assert reply["reply"]["result"] == "wrong_password", reply
    assert HANDLE not in pin_env.enrolled_handles() and not record_exists(pin_env)
    assert audit(syslog_capture) == [(WARNING, by_user("setup", "wrong_password"))]


def test_wrong_password(pin_env, service, syslog_capture):
    reply = setup(service, ["not the password", PIN])
    assert reply["reply"]["result"] == "wrong_password"
    assert [style for _, style in reply["prompts"]] == ["echo_off"]  # no PIN was asked
    assert HANDLE not in pin_env.enrolled_handles() and not record_exists(pin_env)


def test_a_user_may_not_touch_another_users_pin(pin_env, service, syslog_capture):
    """USER against root's PIN: refused before any prompt and any TPM command; root's
    counter does not move."""
    pin_env.enrol("root", PIN)
    reply = setup(service, [PASSWORD, PIN2], user="root")
    assert reply["reply"]["result"] == "permission_denied" and reply["prompts"] == []
    for request in ({"verb": "pin-change", "user": "root", "old_pin": b"0000", "pin": b"1111"},
                    {"verb": "pin-change", "user": "root", "pin": b"1111"},
                    {"verb": "pin-delete", "user": "root", "pin": b"0000"},
                    {"verb": "pin-delete", "user": "root"}):
        assert converse(service.socket, request, [], as_user())["reply"]["result"] == \
            "permission_denied", request
    assert pin_env.counter("root") == (0, 3)
    assert service.ask(verb="pin-check", user="root", pin=PIN.encode())["result"] == "success"
    lines = audit(syslog_capture)
    assert (WARNING, f"setup by {USER} (uid {UID}) for root (uid 0): permission_denied") in lines
    # A name the caller may not use is logged as given, never looked up (review 2 G7).
    assert (WARNING, f"delete by {USER} (uid {UID}) for 'root': permission_denied") in lines


# --- the enrolment story ----------------------------------------------------------------

def test_a_user_enrols_changes_and_deletes_their_pin(pin_env, service, syslog_capture):
    reply = setup(service, [PASSWORD, PIN])
    assert [style for _, style in reply["prompts"]] == ["echo_off", "new_pin"]
    assert reply["reply"]["result"] == "success", reply
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3) and record_exists(pin_env)
    assert audit(syslog_capture)[-1] == (NOTICE, by_user("setup", "success"))
    assert PASSWORD not in syslog_capture.text() and PIN not in syslog_capture.text()
    check = converse(service.socket, {"verb": "pin-check", "user": USER, "pin": PIN.encode()},
                     [], as_user())
    assert check["reply"] == {"result": "success"}

    # A second setup: already enrolled (after the proof), the PIN unchanged.
    again = setup(service, [PASSWORD, PIN2])
    assert again["reply"]["result"] == "already_enrolled"

    # Change: the old PIN is needed; a wrong one counts once and changes nothing.
    change = {"verb": "pin-change", "user": USER}
    assert converse(service.socket, {**change, "pin": PIN2.encode()}, [],
                    as_user())["reply"]["result"] == "invalid_pin"
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
    wrong = converse(service.socket, {**change, "old_pin": b"0000", "pin": PIN2.encode()}, [],
                     as_user())
    assert wrong["reply"]["result"] == "wrong_pin"
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (1, 3)
    assert audit(syslog_capture)[-1] == (WARNING, by_user("change", "wrong_pin"))
    # A new PIN the service's policy refuses: nothing spent, the old PIN stays.
    short = converse(service.socket, {**change, "old_pin": PIN.encode(), "pin": b"12"}, [],
                     as_user())
    assert short["reply"]["result"] == "invalid_pin"
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (1, 3)
    done = converse(service.socket, {**change, "old_pin": PIN.encode(), "pin": PIN2.encode()},
                    [], as_user())
    assert done["reply"]["result"] == "success", done
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
    assert audit(syslog_capture)[-1] == (NOTICE, by_user("change", "success"))

    # Delete: the PIN is needed.
    delete = {"verb": "pin-delete", "user": USER}
    assert converse(service.socket, delete, [], as_user())["reply"]["result"] == "invalid_pin"
    assert converse(service.socket, {**delete, "pin": PIN2.encode()}, [],
                    as_user())["reply"]["result"] == "success"
    assert HANDLE not in pin_env.enrolled_handles() and not record_exists(pin_env)
    assert audit(syslog_capture)[-1] == (NOTICE, by_user("delete", "success"))


def test_root_enrols_a_user_without_a_password(pin_env, service, syslog_capture):
    reply = setup(service, [PIN], who=[])
    assert [style for _, style in reply["prompts"]] == ["new_pin"]
    assert reply["reply"]["result"] == "success", reply
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
    assert audit(syslog_capture)[-1] == (NOTICE, f"setup by root (uid 0) for {USER} (uid {UID}): success")
    # Root changes without the old PIN and deletes without the PIN.
    assert converse(service.socket, {"verb": "pin-change", "user": USER, "pin": PIN2.encode()},
                    [])["reply"]["result"] == "success"
    assert converse(service.socket, {"verb": "pin-delete", "user": USER},
                    [])["reply"]["result"] == "success"
    assert HANDLE not in pin_env.enrolled_handles()


def test_the_verb_itself_refuses_a_setup_without_the_proof(pin_env):
    """The last line: pin-setup run by the worker for a non-root caller, without the
    field only server.py sets after the proof process said "success", enrols nothing
    (here with the worker's own code, in this process, for the machine's `nobody`)."""
    import pwd

    from pinutil.service import verbs
    from pinutil.users import User

    nobody = pwd.getpwnam("nobody").pw_uid
    for fields in ({}, {verbs.PROVEN: False}, {verbs.PROVEN: "yes"}, {verbs.PROVEN: 1}):
        reply = verbs.answer(verbs.pin_setup, pin_env.policy, User(f"uid {nobody}", nobody),
                             {"user": "nobody", "pin": PIN.encode(), **fields})
        assert reply["result"] == "permission_denied", fields
    assert NV_BASE + nobody not in pin_env.enrolled_handles()
