"""A PAM host's PIN login names an account by its name, exactly: PAM_USER "0", "00" or
"0000000000" (no account has that name) gets no PIN prompt and never PAM_SUCCESS, not
even with root's PIN (review 2, PL1: pinutild's lookup took a name of digits for a uid,
and the module no longer looked the name up itself). Fails on the code before: each
was prompted and logged in with root's PIN."""
from __future__ import annotations

import pytest

from tests.support.pamhost import result_name

PIN = "2580"


@pytest.mark.parametrize("name", ["0", "00", "0000000000"])
def test_a_uid_written_as_a_user_name_never_logs_in(pin_env, pinutild_policy, name):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("digits", pin_env.tpm_pin_line(backend="daemon"))
    report = pin_env.run(svc, user=name, answers=[PIN])
    assert result_name(report, "auth") != "PAM_SUCCESS"
    assert report["conv_calls"] == 0
    assert pin_env.counter("root") == (0, 3)
