"""pinutil.pin.index against a real swtpm per test; tpm2-tools is the counter oracle."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from pinutil.tpm._tss import lib

from pinutil import errors
from pinutil.pin import slots
from pinutil.pin.index import (
    NOT_ENROLLED,
    PIN_INDEX_ATTRIBUTES,
    PIN_WRITE_POLICY,
    PinIndex,
    PinStatus,
)
from pinutil.pin.slots import LAST_PRIMARY
from pinutil.tpm import OWNER_NV_LAST, sapi
from pinutil.tpm.context import Tpm
from pinutil.tpm.rc import TpmCommandError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NV_BASE = 0x01000000
UID = 1000
HANDLE = NV_BASE + UID
PIN = b"123456"
OTHER_PIN = b"654321"


@pytest.fixture
def tpm(swtpm):
    with Tpm(swtpm.tcti) as t:
        yield t
    # Nothing we did may leave sessions or objects loaded (no resource manager here).
    assert swtpm.tools("tpm2_getcap", "handles-loaded-session").stdout.strip() == b""
    assert swtpm.tools("tpm2_getcap", "handles-transient").stdout.strip() == b""


@pytest.fixture
def index(tpm):
    return PinIndex(tpm, HANDLE, sapi.salt_key_name(tpm, persist=False))


def _wrong(index, pin=OTHER_PIN, salted=True) -> int:
    with pytest.raises(errors.WrongPin) as info:
        index.check(pin, salted=salted)
    return info.value.attempts_left


def _lockout_counter(swtpm) -> int:
    out = swtpm.tools("tpm2_getcap", "properties-variable").stdout.decode()
    for line in out.splitlines():
        if line.startswith("TPM2_PT_LOCKOUT_COUNTER:"):
            return int(line.split(":")[1], 16)
    raise AssertionError("no TPM2_PT_LOCKOUT_COUNTER in tpm2_getcap output")


# ---- layout -------------------------------------------------------------------------
def test_write_policy_digest_matches_a_trial_session(tpm):
    session = tpm.trial_session()
    try:
        tpm.policy_command_code(session, lib.TPM2_CC_NV_Write)
        tpm.policy_auth_value(session)
        tpm.policy_nv_written(session, False)
        assert tpm.policy_digest(session) == PIN_WRITE_POLICY
    finally:
        tpm.flush(session)


def test_attributes_are_pinpams_and_never_orderly():
    assert PIN_INDEX_ATTRIBUTES == 0x02060088
    assert not PIN_INDEX_ATTRIBUTES & lib.TPMA_NV_ORDERLY


def test_expected_public_matches_what_the_tpm_defines(index, swtpm):
    index.define(PIN, 5)
    out = swtpm.tools("tpm2_nvreadpublic", hex(HANDLE)).stdout.decode()
    expected_name = index.expected_public(written=True).name().hex()
    assert f"name: {expected_name}" in out
    assert "value: 0x22060088" in out  # our attributes | WRITTEN


# ---- handles --------------------------------------------------------------------------
def test_handle_for_uid():
    assert PinIndex.handle_for(1000, NV_BASE) == 0x010003E8
    assert PinIndex.handle_for(LAST_PRIMARY - NV_BASE, NV_BASE) == LAST_PRIMARY
    # Its spare handle, for PIN changes, is the last of the owner range.
    assert slots.of_user(LAST_PRIMARY - NV_BASE, NV_BASE)[1] == OWNER_NV_LAST


@pytest.mark.parametrize("uid, base", [
    (LAST_PRIMARY - NV_BASE + 1, NV_BASE),    # 2097152: first uid that does not fit
    (OWNER_NV_LAST - NV_BASE, NV_BASE),       # its primary would be another's spare
    (65534 + 0x400000, NV_BASE),
    (-1, NV_BASE),
    (1, 0x81000000),                          # persistent-object range, not NV
])
def test_uid_out_of_range_is_a_clear_error(uid, base):
    with pytest.raises(errors.PinutilError, match="range"):
        PinIndex.handle_for(uid, base)


def test_handle_outside_owner_range_is_refused(tpm):
    with pytest.raises(errors.PinutilError):
        PinIndex(tpm, 0x01400000)


# ---- define / status / check ------------------------------------------------------------
def test_status_of_nothing_is_not_enrolled(index):
    assert index.status() == NOT_ENROLLED


@pytest.mark.parametrize("salted_define", [True, False])
@pytest.mark.parametrize("salted_check", [True, False])
def test_define_then_check(index, swtpm, salted_define, salted_check):
    index.define(PIN, 5, salted=salted_define)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)
    status = index.status()
    assert status.enrolled and status.failures == 0 and status.limit == 5
    assert not status.locked and status.attempts_left == 5
    index.check(PIN, salted=salted_check)
    assert _wrong(index, salted=salted_check) == 4
    assert swtpm.read_pin_counter(HANDLE) == (1, 5)


@pytest.mark.parametrize("salted", [True, False])
def test_n_wrong_pins_count_exactly_n(index, swtpm, salted):
    index.define(PIN, 10)
    left = [_wrong(index, pin=b"%06d" % i, salted=salted) for i in range(4)]
    assert left == [9, 8, 7, 6]
    assert swtpm.read_pin_counter(HANDLE) == (4, 10)
    assert index.status().failures == 4


def test_locks_at_limit_even_for_the_right_pin(index, swtpm):
    index.define(PIN, 3)
    assert [_wrong(index) for _ in range(3)] == [2, 1, 0]
    for _ in range(2):
        with pytest.raises(errors.PinLocked):
            index.check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (3, 3)  # locked attempts are not counted
    status = index.status()
    assert status.locked and status.attempts_left == 0 and status.enrolled


def test_correct_pin_resets_the_counter(index, swtpm):
    index.define(PIN, 5)
    _wrong(index)
    _wrong(index)
    assert swtpm.read_pin_counter(HANDLE) == (2, 5)
    index.check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


def test_wrong_pins_do_not_touch_the_dictionary_attack_counter(index, swtpm):
    index.define(PIN, 5)
    for _ in range(4):
        _wrong(index)
    assert _lockout_counter(swtpm) == 0


def test_already_enrolled_keeps_the_old_pin(index, swtpm):
    index.define(PIN, 5)
    with pytest.raises(errors.AlreadyEnrolled):
        index.define(OTHER_PIN, 5)
    index.check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


@pytest.mark.parametrize("pin", [b"", b"1" * 33, b"12\x0034", "123456"])
def test_invalid_pin_is_refused_before_the_tpm(index, swtpm, pin):
    index.define(PIN, 5)
    sent = index.tpm.commands_sent
    with pytest.raises(errors.InvalidPin):
        index.check(pin)
    assert index.tpm.commands_sent == sent
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


@pytest.mark.parametrize("limit", [0, -1, 2**32])
def test_invalid_limit_is_refused_before_the_tpm(index, swtpm, limit):
    with pytest.raises(errors.PinutilError):
        index.define(PIN, limit)
    assert HANDLE not in swtpm.nv_handles()


def test_check_without_index_is_not_enrolled(index):
    with pytest.raises(errors.NotEnrolled):
        index.check(PIN)


# ---- delete / replace -----------------------------------------------------------------
def test_delete(index, swtpm):
    index.define(PIN, 5)
    index.delete()
    assert HANDLE not in swtpm.nv_handles()
    assert index.status() == NOT_ENROLLED
    with pytest.raises(errors.NotEnrolled):
        index.delete()
    with pytest.raises(errors.NotEnrolled):
        index.check(PIN)


def test_remove_leftover_removes_ours_and_keeps_a_foreign_index(index, swtpm):
    assert index.remove_leftover() is False
    index.define(PIN, 3)
    assert index.remove_leftover() is True
    assert HANDLE not in swtpm.nv_handles()
    swtpm.tools("tpm2_nvdefine", hex(HANDLE), "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite")
    with pytest.raises(errors.NotEnrolled, match="not a PIN index"):
        index.remove_leftover()
    assert HANDLE in swtpm.nv_handles()


# ---- fault injection on enrolment --------------------------------------------------------
def test_failed_write_leaves_no_index_behind(index, swtpm, monkeypatch):
    def failing_write(*args, **kwargs):
        raise TpmCommandError("NV_Write", 0x99D)
    monkeypatch.setattr(index.tpm, "nv_write", failing_write)
    with pytest.raises(errors.TpmUnavailable):
        index.define(PIN, 5)
    assert HANDLE not in swtpm.nv_handles()


def test_tpm_without_policy_nv_written_is_unsupported(index, swtpm, monkeypatch):
    real = index.tpm.get_command_supported
    monkeypatch.setattr(index.tpm, "get_command_supported",
                        lambda cc: False if cc == lib.TPM2_CC_PolicyNvWritten else real(cc))
    with pytest.raises(errors.TpmUnsupported, match="PolicyNvWritten"):
        index.define(PIN, 5)
    assert HANDLE not in swtpm.nv_handles()


# ---- indices made by others --------------------------------------------------------------
def _tools_policy(swtpm, session: str, digest_file: str | None = None) -> None:
    out = ["-L", digest_file] if digest_file else []
    swtpm.tools("tpm2_policycommandcode", "-S", session, *out, "TPM2_CC_NV_Write")
    swtpm.tools("tpm2_policyauthvalue", "-S", session, *out)
    swtpm.tools("tpm2_policynvwritten", "-S", session, *out, "c")


def _define_like_pinpam(swtpm, handle: int, pin: bytes, limit: int, write: bool = True) -> None:
    """pinpam's enrolment, done with tpm2-tools only."""
    swtpm.tools("tpm2_startauthsession", "-S", "trial.ctx")
    _tools_policy(swtpm, "trial.ctx", "pol.dig")
    swtpm.tools("tpm2_flushcontext", "trial.ctx")
    swtpm.tools("tpm2_nvdefine", "-C", "o", "-s", "8",
                "-a", "nt=pinfail|authread|ownerread|policywrite|no_da",
                "-p", pin.decode(), "-L", "pol.dig", hex(handle))
    if not write:
        return
    with open(os.path.join(swtpm.state_dir, "data.bin"), "wb") as f:
        f.write((0).to_bytes(4, "big") + limit.to_bytes(4, "big"))
    swtpm.tools("tpm2_startauthsession", "--policy-session", "-S", "pol.ctx")
    _tools_policy(swtpm, "pol.ctx")
    swtpm.tools("tpm2_nvwrite", "-C", hex(handle), "-P", "session:pol.ctx+" + pin.decode(),
                "-i", "data.bin", hex(handle))
    swtpm.tools("tpm2_flushcontext", "pol.ctx")


@pytest.mark.parametrize("salted", [True, False])
def test_index_defined_by_tpm2_tools_like_pinpam_works(index, swtpm, salted):
    _define_like_pinpam(swtpm, HANDLE, PIN, 4)
    assert index.status().enrolled
    index.check(PIN, salted=salted)
    assert _wrong(index, salted=salted) == 3
    assert swtpm.read_pin_counter(HANDLE) == (1, 4)


def test_half_finished_enrolment_is_not_enrolled_and_deletable(index, swtpm):
    _define_like_pinpam(swtpm, HANDLE, PIN, 4, write=False)
    status = index.status()
    assert not status.enrolled and "never written" in status.detail
    with pytest.raises(errors.NotEnrolled, match="never written"):
        index.check(PIN)
    index.delete()
    assert HANDLE not in swtpm.nv_handles()


def test_ordinary_index_at_the_handle_is_refused_untouched(index, swtpm):
    swtpm.tools("tpm2_nvdefine", "-C", "o", "-s", "8", "-a", "ownerread|ownerwrite|authread|authwrite",
                "-p", PIN.decode(), hex(HANDLE))
    sent_before = index.tpm.commands_sent
    with pytest.raises(errors.NotEnrolled, match="not a PIN index"):
        index.check(OTHER_PIN)
    # One public read went to the TPM: the NV_ReadPublic whose Name was refused.
    assert index.tpm.commands_sent - sent_before == 1
    assert _lockout_counter(swtpm) == 0  # a sent wrong auth would have counted here (no NO_DA)
    with pytest.raises(errors.NotEnrolled):
        index.status()
    with pytest.raises(errors.NotEnrolled):
        index.delete()
    assert HANDLE in swtpm.nv_handles()  # someone else's data is never deleted


def test_pin_fail_index_with_a_bypass_policy_is_refused(index, swtpm):
    """A PIN_FAIL index whose policy is PolicyAuthValue alone (the limit-bypass trap)."""
    swtpm.tools("tpm2_startauthsession", "-S", "trial.ctx")
    swtpm.tools("tpm2_policyauthvalue", "-S", "trial.ctx", "-L", "bypass.dig")
    swtpm.tools("tpm2_flushcontext", "trial.ctx")
    swtpm.tools("tpm2_nvdefine", "-C", "o", "-s", "8",
                "-a", "nt=pinfail|authread|ownerread|policywrite|no_da",
                "-p", PIN.decode(), "-L", "bypass.dig", hex(HANDLE))
    with open(os.path.join(swtpm.state_dir, "data.bin"), "wb") as f:
        f.write((0).to_bytes(4, "big") + (5).to_bytes(4, "big"))
    swtpm.tools("tpm2_startauthsession", "--policy-session", "-S", "pol.ctx")
    swtpm.tools("tpm2_policyauthvalue", "-S", "pol.ctx")
    swtpm.tools("tpm2_nvwrite", "-C", hex(HANDLE), "-P", "session:pol.ctx+" + PIN.decode(),
                "-i", "data.bin", hex(HANDLE))
    swtpm.tools("tpm2_flushcontext", "pol.ctx")
    with pytest.raises(errors.NotEnrolled, match="write policy"):
        index.check(OTHER_PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)  # the wrong PIN was never sent


# ---- transport failures -------------------------------------------------------------------
def test_killed_tpm_then_restart_keeps_the_counter(swtpm):
    with Tpm(swtpm.tcti) as t:
        index = PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False))
        index.define(PIN, 5)
        _wrong(index)
        _wrong(index)
        swtpm.kill()
        with pytest.raises(errors.TpmUnavailable) as info:
            index.check(PIN)
        assert not isinstance(info.value, TpmCommandError)
    swtpm.start()
    assert swtpm.read_pin_counter(HANDLE) == (2, 5)
    with Tpm(swtpm.tcti) as t:
        index = PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False))
        index.check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


def test_check_on_absent_tpm_is_unavailable():
    with pytest.raises(errors.TpmUnavailable), Tpm("swtpm:path=/tmp/pypam-no-such-tpm/sock") as t:
        PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False)).check(PIN)


def test_check_on_paused_tpm_finishes_after_resume_and_counts_once(swtpm):
    """A hung TPM blocks the check (no in-process bound with tcti-swtpm, see tpm.py);
    after SIGCONT the one wrong PIN is counted exactly once and never resent."""
    outcome: list[object] = []
    with Tpm(swtpm.tcti, timeout_ms=200) as t:
        index = PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False))
        index.define(PIN, 5)

        def run():
            try:
                index.check(OTHER_PIN)
                outcome.append("accepted")
            except errors.PinutilError as e:
                outcome.append(e)

        swtpm.pause()
        try:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            worker.join(1.0)
            assert worker.is_alive()
        finally:
            swtpm.resume()
        worker.join(10)
        assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], errors.WrongPin)
    assert outcome[0].attempts_left == 4
    assert swtpm.read_pin_counter(HANDLE) == (1, 5)


def test_tpm_killed_during_the_pin_read_is_unavailable_and_never_resent(swtpm, monkeypatch):
    """The TPM hangs with NV_Read in its socket and is then killed: the client gets
    TpmUnavailable, the PIN was sent once, and after a restart the index works."""
    with Tpm(swtpm.tcti) as t:
        index = PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False))
        index.define(PIN, 5)
        real_nv_read = sapi._nv_read
        reads: list[int] = []
        killers: list[threading.Timer] = []

        def nv_read_into_a_dying_tpm(tpm, auth_handle, nv, size, auths):
            if auth_handle != nv:  # the owner read of the counter is not the PIN read
                return real_nv_read(tpm, auth_handle, nv, size, auths)
            reads.append(nv)
            swtpm.pause()
            killers.append(threading.Timer(0.3, swtpm.kill))
            killers[0].start()
            return real_nv_read(tpm, auth_handle, nv, size, auths)

        with monkeypatch.context() as patch, pytest.raises(errors.TpmUnavailable) as info:
            patch.setattr(sapi, "_nv_read", nv_read_into_a_dying_tpm)
            index.check(OTHER_PIN)
        assert not isinstance(info.value, TpmCommandError)
        assert len(reads) == 1
    killers[0].join()  # the client may see the dead socket before kill() has reaped swtpm
    swtpm.start()
    failures, limit = swtpm.read_pin_counter(HANDLE)
    assert limit == 5 and failures <= 1
    with Tpm(swtpm.tcti) as t:
        PinIndex(t, HANDLE, sapi.salt_key_name(t, persist=False)).check(PIN)
    assert swtpm.read_pin_counter(HANDLE) == (0, 5)


# ---- cost of the login path ------------------------------------------------------------------
@pytest.mark.parametrize("salted, persistent_salt_key, commands", [
    (True, True, 4),    # NV_ReadPublic, ReadPublic (salt key), StartAuthSession, NV_Read
    (True, False, 6),   # ... ReadPublic misses: CreatePrimary and FlushContext instead
    (False, False, 2),  # NV_ReadPublic, NV_Read (the PIN in clear)
])
def test_check_path_sends_few_commands(index, salted, persistent_salt_key, commands):
    index.define(PIN, 5)
    if persistent_salt_key:
        assert sapi.persist_salt_key(index.tpm) == "ours"
    before = index.tpm.commands_sent
    index.check(PIN, salted=salted)
    assert index.tpm.commands_sent - before == commands


def test_import_does_not_load_tpm2_pytss_or_cryptography():
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r}); import pinutil.pin.index; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tpm2_pytss', 'cryptography', 'pypam')); print(bad)"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=30, check=True)
    assert out.stdout.strip() == b"[]", out.stdout


# Everything modules/tpm_pin.py and modules/master_key.py import while a login runs.
LOGIN_PATH_MODULES = ["pinutil.pin.index", "pinutil.pin.login", "pinutil.pin.local_login",
                      "pinutil.pin.policy", "pinutil.users", "pinutil.deadline", "pinutil.errors", "pinutil.master_key.token",
                      "pinutil.pin.enrolment"]


@pytest.mark.parametrize("module", LOGIN_PATH_MODULES)
def test_login_path_stays_off_heavy_stdlib_modules(module):
    """dataclasses (with inspect, re, enum, ast) alone costs ~10 ms of a ~34 ms login
    (pinutil.master_key's token path once cost 23 ms that way)."""
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r}); import {module}; "
        "print(sorted({'dataclasses', 'inspect', 'enum', 're', 'typing', 'hashlib', 'ast'} "
        "& set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=30, check=True)
    assert out.stdout.strip() == b"[]", out.stdout


def test_pin_status_is_an_immutable_value():
    a = PinStatus(enrolled=True, failures=1, limit=5, locked=False, attempts_left=4)
    assert a == PinStatus(True, 1, 5, False, 4, "") and hash(a) == hash(PinStatus(True, 1, 5, False, 4))
    assert a != PinStatus(True, 2, 5, False, 3)
    assert a.as_dict()["attempts_left"] == 4 and a.detail == ""
    with pytest.raises(AttributeError):
        a.failures = 0


def test_import_probe_can_see_tpm2_pytss():
    """Control for the test above: the probe does detect the heavy import."""
    code = ("import sys, tpm2_pytss; print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'tpm2_pytss', 'cryptography'}))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=60, check=True)
    assert b"tpm2_pytss" in out.stdout and b"cryptography" in out.stdout
