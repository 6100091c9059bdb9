"""The cap on connections waiting at a prompt (review PL4), against a real pinutild and
swtpm: a pin-login's PIN prompt holds its connection while a person types (up to
--pin-prompt-timeout); with `allow_remote` an sshd relays unauthenticated network
clients there, all of them root's, which the per-uid cap does not bound. However many
sit at prompts, the connections that do TPM work (pin-check, master-key-token, a
pin-login past its prompt) are still served; a pin-login beyond the cap is refused at
once with `tpm_unavailable`, never a success, never a hang (docs/pinutild.md, LIMITS).
"""
from __future__ import annotations

import contextlib
import json
import subprocess

from tests.service.test_master_key_verb import _init_master_key, _token
from tests.service.test_pin_login import (
    FIRST_PROMPT,
    PIN,
    WRONG,
    answer,
    begin,
    next_frame,
)
from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import PYTHON, ROOT, start_pinutild

#: The service's global cap on open connections (server.Limits.max_connections): as
#: many parked prompts as the old service let in, so that nothing was left for others.
ALL_CONNECTIONS = 256
PROMPTS = 64  # --max-prompts' default


def _park(path: str, n: int) -> tuple[list, list[dict]]:
    """`n` root pin-logins, each left at its prompt: (their sockets, their first frames)."""
    socks, firsts = [], []
    for _ in range(n):
        sock = begin(path, user="root")
        socks.append(sock)
        firsts.append(next_frame(sock))
    return socks, firsts


def test_parked_prompts_never_crowd_out_tpm_work(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    secret = _init_master_key(pin_env)
    socks, firsts = _park(pinutild.socket, ALL_CONNECTIONS)
    with contextlib.ExitStack() as parked:
        for sock in socks:
            parked.enter_context(sock)
        # The work that needs the TPM goes on: a PIN check, a keyring token.
        assert pinutild.ask(verb="pin-check", user="root", pin=PIN.encode()) \
            == {"result": "success"}
        assert pinutild.ask(verb="master-key-token", user="root") \
            == {"result": "success", "token": _token(secret, "root")}
        prompted = [s for s, first in zip(socks, firsts, strict=True) if first == FIRST_PROMPT]
        refused = [first for first in firsts if first != FIRST_PROMPT]
        assert len(prompted) == PROMPTS
        assert all(first["result"] == "tpm_unavailable" for first in refused), refused[:3]
        # A new login is refused at once (never a success, never a hang) ...
        with begin(pinutild.socket, user="root") as extra:
            assert next_frame(extra)["result"] == "tpm_unavailable"
            assert next_frame(extra) is None
        # ... while a parked one that answers is past its prompt: its PIN is checked.
        prompted[0].sendall(answer(PIN))
        assert next_frame(prompted[0]) == {"result": "success"}
        # Its place is free again: the next login gets a prompt.
        with begin(pinutild.socket, user="root") as again:
            assert next_frame(again) == FIRST_PROMPT
    assert pin_env.counter("root") == (0, 3)  # nothing was tried for a refused login


def test_the_cap_is_an_option_and_a_place_frees_when_its_login_moves_on(pin_env):
    pin_env.enrol("root", PIN)
    service = start_pinutild(pin_env, "--max-prompts", "2")
    try:
        socks, firsts = _park(service.socket, 3)
        assert firsts == [FIRST_PROMPT, FIRST_PROMPT, firsts[2]]
        assert firsts[2]["result"] == "tpm_unavailable"
        socks[0].close()  # a client that leaves at its prompt frees its place
        socks[1].sendall(answer(WRONG))  # and so does one whose answer goes to the TPM
        assert next_frame(socks[1])["result"] == "wrong_pin"
        more, more_firsts = _park(service.socket, 3)
        again = {"prompt": "PIN (2 attempts left): ", "style": "echo_off"}
        assert more_firsts[:2] == [again, again]
        assert more_firsts[2]["result"] == "tpm_unavailable"
        for sock in socks + more:
            sock.close()
        assert pin_env.counter("root") == (1, 3)
    finally:
        service.stop()


# A caller of another uid (run through setpriv): parks argv[3] pin-logins for argv[2]
# at their prompts, prints their first frames (JSON), and keeps them until stdin ends.
_PARK_AS_CALLER = """
import json, socket, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import protocol
socks, firsts = [], []
for _ in range(int(sys.argv[3])):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(sys.argv[1])
    sock.sendall(protocol.encode({"verb": "pin-login", "user": sys.argv[2]}))
    data = b""
    while len(data) < protocol.HEADER_SIZE or len(data) < protocol.HEADER_SIZE + \
            protocol.body_length(data[:protocol.HEADER_SIZE]):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    socks.append(sock)
    firsts.append(protocol.decode_frame(data) if data else None)
print(json.dumps(firsts), flush=True)
sys.stdin.read()
""".replace("ROOT_DIR", repr(ROOT))


def test_one_user_holds_only_a_share_of_the_prompts(pin_env, pinutild):
    """A user other than root (whose logins the per-uid cap bounds anyway) may hold 4
    prompts: a few users together cannot take every prompt from the others."""
    pin_env.enrol("nobody", PIN)
    pin_env.enrol("root", PIN)
    caller = subprocess.Popen([*AS_NOBODY, PYTHON, "-I", "-c", _PARK_AS_CALLER,
                               pinutild.socket, "nobody", "5"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd="/", env={"PATH": "/usr/bin:/bin"})
    try:
        firsts = json.loads(caller.stdout.readline())
        assert firsts[:4] == [FIRST_PROMPT] * 4
        assert firsts[4]["result"] == "tpm_unavailable", firsts[4]
        with begin(pinutild.socket, user="root") as sock:  # another caller's login
            assert next_frame(sock) == FIRST_PROMPT
    finally:
        caller.communicate("", timeout=60)
    assert pin_env.counter("nobody") == (0, 3)


def test_a_root_host_acting_for_a_user_has_that_users_share(pin_env, pinutild):
    """A root host acting for nobody (polkit's agent helper, driven by nobody's agent:
    `on_behalf_of`) counts as nobody for the share too (review G8): on the old code
    its logins were root's, bounded only by the 64 in all."""
    pin_env.enrol("nobody", PIN)
    pin_env.enrol("root", PIN)
    socks = [begin(pinutild.socket, user="nobody", on_behalf_of=65534) for _ in range(5)]
    with contextlib.ExitStack() as parked:
        for sock in socks:
            parked.enter_context(sock)
        firsts = [next_frame(sock) for sock in socks]
        assert firsts[:4] == [FIRST_PROMPT] * 4
        assert firsts[4]["result"] == "tpm_unavailable", firsts[4]
        with begin(pinutild.socket, user="root") as sock:  # root's own login
            assert next_frame(sock) == FIRST_PROMPT
    assert pin_env.counter("nobody") == (0, 3)
