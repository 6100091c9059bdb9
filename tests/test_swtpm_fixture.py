"""The swtpm fixture itself: start() returns a TPM that answers, with the sockets' mode
already final (a test's chmod used to race swtpm's own, and its connect to race listen)."""
from __future__ import annotations

import os
import stat

from tests.support.swtpm import SOCKET_MODE


def _modes(swtpm) -> list[int]:
    return [stat.S_IMODE(os.stat(p).st_mode) for p in (swtpm.sock, swtpm.sock + ".ctrl")]


def test_started_tpm_answers_and_its_sockets_have_their_final_mode(swtpm):
    assert _modes(swtpm) == [SOCKET_MODE, SOCKET_MODE]
    assert len(swtpm.tools("tpm2_getrandom", "8").stdout) == 8


def test_restarted_tpm_answers_on_the_same_state(swtpm):
    swtpm.tools("tpm2_nvdefine", "-C", "o", "-s", "8", "0x1500010")
    swtpm.kill()
    swtpm.start()
    assert _modes(swtpm) == [SOCKET_MODE, SOCKET_MODE]
    assert 0x1500010 in swtpm.nv_handles()


def test_loaded_handles_sees_what_a_client_left_and_flush_removes_it(swtpm):
    assert swtpm.loaded_handles() == []
    # Without a resource manager both stay loaded after the tools exit.
    swtpm.tools("tpm2_createprimary", "-C", "o", "-c", "primary.ctx")
    swtpm.tools("tpm2_startauthsession", "-S", "session.ctx")
    left = swtpm.loaded_handles()
    assert sorted(h >> 24 for h in left) == [0x02, 0x80]  # an HMAC session, an object
    for handle in left:
        swtpm.flush(handle)
    assert swtpm.loaded_handles() == []
