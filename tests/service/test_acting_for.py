"""A root PAM host that serves a client on its stdin acts for that client (review F11).

polkit 127 runs its agent helper socket-activated, as root, with the connection of
whichever agent connected as fd 0 (Accept=yes, socket mode 0666), and it runs
pam_authenticate("polkit-1", the user the agent names) before polkitd checks anything.
Counted as root, any local user could spend and lock any enrolled user's PIN.

Here the helper is a real root PAM host (build/pamhost, real libpam, service
`polkit-1`) whose fd 0 is a unix stream connection accepted from an "agent": a real
process of another uid (setpriv). Through every backend (the service, the set-gid
helper, direct) another user's PIN is never prompted for nor counted (the TPM's
counter, read out of band, stays), and the agent's own user logs in with their PIN.
Root's agent acts for anyone. An agent that is effective root but really a user (a
set-uid pkexec runs its own text agent in-process) counts as that user. The service
applies the same rule to a root client that says `on_behalf_of` (the protocol's
general form), whatever the PAM side did.
"""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from tests.support.accounts import AS_NOBODY
from tests.support.agent import Agent
from tests.support.pamhost import prompts, result_name

PIN = "2580"
WRONG = "1111"
LIMIT = 3
NOBODY_UID = 65534
BACKENDS = ("daemon", "helper", "direct")
AS_ROOT = ()
#: Real uid nobody, effective uid root: what a set-uid root program (pkexec) is.
AS_SETUID_ROOT = ("setpriv", "--ruid=nobody", "--rgid=nogroup", "--clear-groups", "--")


@pytest.fixture(params=BACKENDS)
def backend(request, pin_env) -> str:
    if request.param == "daemon":
        request.getfixturevalue("pinutild_policy")
    return request.param


@pytest.fixture
def agent():
    made = []

    def make(as_user) -> Agent:
        made.append(Agent(as_user))
        return made[-1]

    yield make
    for each in made:
        each.close()


def helper_login(pin_env, backend, user, stdin_fd, answers=(PIN,), service="polkit-1"):
    """The socket-activated helper: root, the agent's connection as fd 0."""
    svc = pin_env.service(service, pin_env.tpm_pin_line(backend=backend))
    return pin_env.run(svc, user=user, answers=list(answers),
                       preexec=lambda: os.dup2(stdin_fd, 0))


def test_another_users_pin_is_never_prompted_nor_counted(pin_env, backend, agent):
    pin_env.enrol("root", PIN)
    conn = agent(AS_NOBODY).conn
    for answers in ([WRONG], [PIN]):
        report = helper_login(pin_env, backend, "root", conn.fileno(), answers)
        assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL", report
        assert report["conv_calls"] == 0  # no prompt, no "attempts left" oracle
    assert pin_env.counter("root") == (0, LIMIT)


def test_the_agents_own_pin_works(pin_env, backend, agent):
    pin_env.enrol("nobody", PIN)
    conn = agent(AS_NOBODY).conn
    report = helper_login(pin_env, backend, "nobody", conn.fileno())
    assert result_name(report, "auth") == "PAM_SUCCESS", report
    assert prompts(report) == ["PIN: "]
    report = helper_login(pin_env, backend, "nobody", conn.fileno(), [WRONG])
    assert result_name(report, "auth") == "PAM_AUTH_ERR"
    assert pin_env.counter("nobody") == (1, LIMIT)


def test_a_setuid_root_agent_counts_as_its_real_user(pin_env, backend, agent):
    """pkexec (set-uid root) runs its text agent in-process: effective root connects."""
    pin_env.enrol("root", PIN)
    conn = agent(AS_SETUID_ROOT).conn
    report = helper_login(pin_env, backend, "root", conn.fileno(), [WRONG])
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL", report
    assert report["conv_calls"] == 0
    assert pin_env.counter("root") == (0, LIMIT)


def test_roots_agent_acts_for_anyone(pin_env, backend, agent):
    pin_env.enrol("nobody", PIN)
    conn = agent(AS_ROOT).conn
    report = helper_login(pin_env, backend, "nobody", conn.fileno())
    assert result_name(report, "auth") == "PAM_SUCCESS", report


def test_any_root_host_of_that_shape_gets_the_rule(pin_env, agent):
    """Not only polkit-1: any inetd-style root service whose client names the account."""
    pin_env.enrol("root", PIN)
    conn = agent(AS_NOBODY).conn
    report = helper_login(pin_env, "direct", "root", conn.fileno(), [WRONG], service="login")
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"
    assert pin_env.counter("root") == (0, LIMIT)


def test_other_stdins_leave_the_host_acting_for_itself(pin_env):
    """The controls: /dev/null (every other root host), a listening socket, a pipe."""
    pin_env.enrol("root", PIN)
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(b"\0" + f"pypam-listen-{uuid.uuid4().hex}".encode())
    listening.listen(1)
    read_end, write_end = os.pipe()
    try:
        for fd in (None, listening.fileno(), read_end):
            svc = pin_env.service("polkit-1", pin_env.tpm_pin_line(backend="direct"))
            report = pin_env.run(svc, user="root", answers=[PIN], preexec=None if fd is None
                                 else (lambda fd=fd: os.dup2(fd, 0)))
            assert result_name(report, "auth") == "PAM_SUCCESS", (fd, report)
    finally:
        listening.close()
        os.close(read_end)
        os.close(write_end)


# ---- the service's side: a root client says on whose behalf it asks ---------------------
def test_the_service_applies_the_rules_to_the_uid_root_acts_for(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    pin_env.enrol("nobody", PIN)
    for fields in ({"verb": "pin-check", "pin": WRONG.encode()}, {"verb": "pin-status"}):
        reply = pinutild.ask(user="root", on_behalf_of=NOBODY_UID, **fields)
        assert reply["result"] == "permission_denied", reply
        # No account at all (the PAM side's answer for a peer it cannot establish).
        assert pinutild.ask(user="nobody", on_behalf_of=-1, **fields)["result"] \
            == "permission_denied"
    assert pin_env.counter("root") == (0, LIMIT)
    ok = pinutild.ask(verb="pin-check", user="nobody", pin=PIN.encode(),
                      on_behalf_of=NOBODY_UID)
    assert ok == {"result": "success"}
    assert pinutild.ask(verb="pin-status", user="nobody",
                        on_behalf_of=NOBODY_UID)["failures"] == 0
    # Root acting for root, i.e. for anyone: as without the field.
    assert pinutild.ask(verb="pin-check", user="nobody", pin=PIN.encode(),
                        on_behalf_of=0) == {"result": "success"}


def test_only_root_may_say_it_acts_for_another(pin_env, pinutild):
    pin_env.enrol("nobody", PIN)
    widen = pinutild.ask(AS_NOBODY, verb="pin-check", user="nobody", pin=WRONG.encode(),
                         on_behalf_of=0)
    assert widen["result"] == "permission_denied", widen
    assert pin_env.counter("nobody") == (0, LIMIT)
    own = pinutild.ask(AS_NOBODY, verb="pin-check", user="nobody", pin=PIN.encode(),
                       on_behalf_of=NOBODY_UID)
    assert own == {"result": "success"}
    for bad in (True, "65534", b"0", 1 << 40, -2):
        reply = pinutild.ask(verb="pin-check", user="nobody", pin=WRONG.encode(),
                             on_behalf_of=bad)
        assert reply["result"] in ("bad_request", "permission_denied"), (bad, reply)
    assert pin_env.counter("nobody") == (0, LIMIT)
