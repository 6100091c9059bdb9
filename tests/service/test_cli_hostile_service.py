"""`pinutil` does not take pinutild's word for what to ask (review 2 G5): whoever runs as
the service's account is believed as the server (root or `pinutild`), and could make a
user's plain `pinutil setup` ask for the account password again after the new PIN,
ask for it 17 times, or write terminal escape sequences (an OSC 52 clipboard write, a
window title) to the user's terminal. A stand-in service, run as root so the client's
server check passes, sends each of those; the real plain `pinutil` must end the
command before it sends anything typed at a prompt outside pin-setup's flow, and show
every text of the service's with its control characters escaped visibly. Each test
fails on the code before (the answers reached the stand-in, the bytes the terminal).
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator

from pinutil.service.proof import MAX_PROMPTS as PROOF_MESSAGES
from tests.service.enrol_support import PASSWORD, PIN, as_user
from tests.service.test_cli_through_service import run
from tests.support.pinutild import ROOT
from tests.support.terminal import answer_on_terminal

# argv: socket, ROOT, {verb: [[text, style], ...]}, {verb: final reply}, connections.
# Serves that many connections, one request each: the verb's prompt frames (reading
# the answer of each that asks: printed as a JSON line), then its final reply (default
# a setup's success; a verb without prompts: a status with no PIN). A client that
# closes the connection early ends that connection ({"closed": verb}).
_STAND_IN = r"""
import json, os, socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
steps, finals, connections = json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666); server.listen(8)
print("ready", flush=True)
def frame(conn):
    header = conn.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
    if len(header) < protocol.HEADER_SIZE:
        raise EOFError
    return protocol.decode_body(conn.recv(protocol.body_length(header), socket.MSG_WAITALL))
for _ in range(connections):
    conn, _ = server.accept()
    verb = frame(conn)["verb"]
    try:
        for text, style in steps.get(verb, []):
            conn.sendall(protocol.encode({"prompt": text, "style": style}))
            if style in ("echo_off", "echo_on", "new_pin"):
                answer = frame(conn)["answer"].decode(errors="replace")
                print(json.dumps({"verb": verb, "asked": text, "answer": answer}), flush=True)
        final = finals.get(verb, {"result": "success", "limit": 3} if verb in steps else
                           {"result": "success", "enrolled": False})
        conn.sendall(protocol.encode(final))
    except (EOFError, OSError):
        print(json.dumps({"closed": verb}), flush=True)
    conn.close()
"""


@contextlib.contextmanager
def stand_in(pin_env, steps: dict, finals: dict | None = None,
             connections: int = 1) -> Iterator[list]:
    """The stand-in service as the policy's `service_socket`; the list it yields is
    filled, once the block ends, with what the stand-in printed (answers, closes)."""
    path = os.path.join(pin_env.dir, "stand-in.sock")
    proc = subprocess.Popen([sys.executable, "-I", "-c", _STAND_IN, path, ROOT,
                             json.dumps(steps), json.dumps(finals or {}), str(connections)],
                            stdout=subprocess.PIPE, text=True, cwd="/")
    seen: list = []
    try:
        assert proc.stdout.readline() == "ready\n"
        pin_env.policy_extra["service_socket"] = path
        pin_env.write_policy()
        yield seen
        out, _ = proc.communicate(timeout=60)  # it has served every connection
        seen += [json.loads(line) for line in out.splitlines()]
    finally:
        proc.kill()
        proc.wait()


def answers(seen: list) -> list[str]:
    return [line["answer"] for line in seen if "answer" in line]


def test_a_password_prompt_after_the_new_pin_is_not_answered(pin_env, accounts, plain):
    """The proof's prompt, the new PIN, then a "Password: " of the service's own: that
    one is refused, and the password typed for it never leaves pinutil."""
    flow = [["Password: ", "echo_off"], ["New PIN: ", "new_pin"], ["Password: ", "echo_off"]]
    with stand_in(pin_env, {"pin-setup": flow}) as seen:
        done, answer = run(accounts, plain, "setup", stdin=f"{PASSWORD}\n{PIN}\n{PASSWORD}2\n")
    assert answer["result"] == "tpm_unavailable" and done.returncode == 9, done.stderr
    assert b"after the new PIN" in done.stderr
    assert answers(seen) == [PASSWORD, PIN]  # not the third line
    assert seen[-1] == {"closed": "pin-setup"}


def test_a_second_new_pin_prompt_is_not_answered(pin_env, accounts, plain):
    flow = [["New PIN: ", "new_pin"], ["New PIN: ", "new_pin"]]
    with stand_in(pin_env, {"pin-setup": flow}) as seen:
        done, answer = run(accounts, plain, "setup", stdin=f"{PIN}\n{PIN}9\n")
    assert answer["result"] == "tpm_unavailable", done.stderr
    assert answers(seen) == [PIN]


def test_seventeen_password_prompts_are_cut_off_at_the_proofs_limit(pin_env, accounts, plain):
    """The proof process sends at most PROOF_MESSAGES messages (pinutil.service.proof):
    a service that asks more is refused before the next answer."""
    lines = [f"guess {n}" for n in range(17)]
    with stand_in(pin_env, {"pin-setup": [["Password: ", "echo_off"]] * 17}) as seen:
        done, answer = run(accounts, plain, "setup", stdin="".join(f"{x}\n" for x in lines))
    assert answer["result"] == "tpm_unavailable", done.stderr
    assert answers(seen) == lines[:PROOF_MESSAGES]


def test_the_services_texts_reach_the_terminal_without_control_characters(
        pin_env, accounts, plain):
    """On a terminal: an OSC 52 clipboard write and a title change in the password
    prompt, a CSI (7-bit and C1) in an info line, a BEL and an OSC in the final error.
    Shown with each control character escaped (\\x1b), none of them raw."""
    clipboard = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"
    flow = [[f"{clipboard}\x1b]0;owned\x07Password: ", "echo_off"],
            ["\x1b[2J\x9b31mNotice\x1b[8m", "info"],
            ["New PIN: ", "new_pin"]]
    final = {"result": "permission_denied", "error": f"denied{clipboard}\x1b[?1049h"}
    with stand_in(pin_env, {"pin-setup": flow}, {"pin-setup": final}, connections=2) as seen:
        code, shown = answer_on_terminal([*accounts.prefix(), *as_user(), plain, "setup"],
                                         [PASSWORD, PIN, PIN],
                                         {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert code == 6, shown  # the stand-in's permission_denied
    assert answers(seen) == [PASSWORD, PIN]
    for raw in (b"\x1b", b"\x07", "\x9b".encode()):
        assert raw not in shown, shown
    assert b"\\x1b]52;c;" in shown and b"Password: " in shown and b"Notice" in shown


def test_the_services_error_text_reaches_stderr_without_control_characters(
        pin_env, accounts, plain):
    final = {"result": "permission_denied", "error": "no\x1b]52;c;eA==\x07\x9b2J way"}
    info = ["\x1b]0;title\x07info line", "error"]
    with stand_in(pin_env, {"pin-setup": [info]}, {"pin-setup": final}):
        done, answer = run(accounts, plain, "setup")
    assert answer["result"] == "permission_denied", done.stderr
    for raw in (b"\x1b", b"\x07", "\x9b".encode()):
        assert raw not in done.stderr, done.stderr
    assert b"\\x1b]0;title\\x07info line" in done.stderr
    assert b"no\\x1b]52;c;eA==\\x07\\x9b2J way" in done.stderr


def test_the_commands_that_ask_nothing_refuse_any_prompt(pin_env, accounts, plain):
    """status and test: a prompt frame instead of the reply is refused, nothing typed
    is sent (test sends its PIN in the request, before any prompt could come)."""
    ask = [["Password: ", "echo_off"]]
    with stand_in(pin_env, {"pin-status": ask, "pin-check": ask}, connections=2) as seen:
        status, answer = run(accounts, plain, "status", stdin=f"{PASSWORD}\n")
        assert answer["result"] == "tpm_unavailable", status.stderr
        check, answer = run(accounts, plain, "test", stdin=f"{PIN}\n{PASSWORD}\n")
        assert answer["result"] == "tpm_unavailable", check.stderr
    assert answers(seen) == []
