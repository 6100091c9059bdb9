"""tpm_pin shows only its own PIN prompts, whatever text the service sends (review 2
PL3): pin-login's prompt frame carries text, and a PAM host (gdm, login, su) would show
whatever answers as pinutild chose (a "Password: " to phish, a terminal's escape
sequences). A stand-in service sends the frame; the module shows a prompt only when
the text is one of pinutil.pin.prompt.prompt_text's (rebuilt from its number), else
PAM_AUTHINFO_UNAVAIL with no prompt. Fails on the code before: the text was shown."""
from __future__ import annotations

import pytest

from tests.support.pamhost import result_name
from tests.support.pinutild import login_through_stand_in

_STAND_IN = r"""
import os, socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1]); server.listen(8)
print("ready", flush=True)
conn, _ = server.accept()
header = conn.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
conn.recv(protocol.body_length(header), socket.MSG_WAITALL)
conn.sendall(protocol.encode({"prompt": sys.argv[3], "style": "echo_off"}))
conn.recv(65536)
conn.sendall(protocol.encode({"result": "wrong_pin", "attempts_left": 2}))
conn.close()
"""


def _login_with_prompt(pin_env, text: str) -> dict:
    return login_through_stand_in(pin_env, _STAND_IN, [text], "prompt", ["2580"], check=False)


@pytest.mark.parametrize("text", ["\x1b]0;owned\x07\x1b[2JYour password: ", "Password: ",
                                  "PIN (1 attempts left): ", "PIN: \x1b[8m"])
def test_a_prompt_text_of_the_services_choosing_is_never_shown(pin_env, text):
    report = _login_with_prompt(pin_env, text)
    assert report["conv_calls"] == 0, report["messages"]
    assert result_name(report, "auth") == "PAM_AUTHINFO_UNAVAIL"


@pytest.mark.parametrize("text", ["PIN: ", "PIN (2 attempts left): ", "PIN (last attempt): "])
def test_the_modules_own_prompts_are_shown(pin_env, text):
    report = _login_with_prompt(pin_env, text)
    assert [m["text"] for m in report["messages"]][:1] == [text], report["messages"]
    assert result_name(report, "auth") == "PAM_AUTH_ERR"  # the stand-in's wrong_pin
