"""Fault injection on the TPM transport: every response of a PIN login, dropped,
truncated at every length and corrupted at every byte.

tests/support/tpm_proxy.py sits between the login and a real swtpm. A reference login
gives the genuine sequence of responses; then, for each response k and each fault, a
fresh login runs with exactly that one fault. For every fault:

- a wrong PIN never succeeds, and the right PIN never yields anything but success or
  a domain error (no Python exception that is not a PinutilError, no crash);
- no counted attempt without a TPM answer: the TPM's own counter (read as owner on a
  direct connection) moves by exactly the number of PIN reads the TPM itself answered
  with BAD_AUTH (the proxy's transcript holds the TPM's genuine answers);
- nothing is left loaded in the TPM (no resource manager here: a leaked session or
  object would stay until the TPM restarts).

The bulk runs the login the way the PAM module does (DirectBackend: status, then
check) in one long-lived child process, a few ms per fault; a sample of faults also
runs through the real PAM host with tpm_pin, both backends.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

from pinutil.pin import enrolment, salt_key
from pinutil.pin.index import PinIndex
from pinutil.tpm import sapi
from pinutil.tpm.context import Tpm
from tests.support.pamhost import PAM_SUCCESS, result_code
from tests.support.tpm_proxy import (
    CC_CREATE_PRIMARY,
    CC_NV_READ,
    CC_START_AUTH_SESSION,
    HEADER,
    TpmProxy,
    parse_command,
    response_code,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UID = 0
HANDLE = 0x01000000 + UID
# The enrolled index's Name (for the owner read's cpHash).
NAME = PinIndex(None, HANDLE).expected_public(written=True).name()
PIN = "2580"
WRONG = "1111"
LIMIT = 1_000_000  # the sweep spends many attempts; never lock
RC_BAD_AUTH_SESSION_1 = 0x9A2

_WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from pinutil import errors
    from pinutil.deadline import TpmBudget
    from pinutil.pin.local_login import DirectBackend
    from pinutil.pin.policy import load_policy
    from pinutil.users import User
    policy = load_policy(sys.argv[2])
    user = User("root", 0)
    for line in sys.stdin:
        pin = line.strip().encode()
        backend = DirectBackend(policy, TpmBudget(policy.helper_timeout))
        try:  # what modules/tpm_pin.py does: status first, then one check
            status = backend.status(user)
            if not status.enrolled:
                raise errors.NotEnrolled("not enrolled")
            if status.locked:
                raise errors.PinLocked("locked")
            backend.check(user, pin)
            outcome = "success"
        except errors.PinutilError as e:
            outcome = type(e).__name__
        except BaseException as e:  # a bug: the module would answer PAM_SERVICE_ERR
            outcome = "BUG " + type(e).__name__ + ": " + str(e)[:200]
        print(json.dumps(outcome), flush=True)
""")


class Fault:
    """One fault on the k-th response of a login."""

    def __init__(self, k: int, kind: str, at: int = 0) -> None:
        self.k, self.kind, self.at = k, kind, at

    def __repr__(self) -> str:
        return f"{self.kind}@{self.at} of response {self.k}"

    def apply(self, response: bytes) -> bytes | None:
        if self.kind == "drop":
            return None
        if self.kind == "truncate":
            return response[:self.at]
        return response[:self.at] + bytes([response[self.at] ^ 0xFF]) + response[self.at + 1:]


class Injector:
    """The proxy's intercept: one fault on the k-th exchange after `arm()`."""

    def __init__(self) -> None:
        self.fault: Fault | None = None
        self.seen = 0

    def arm(self, fault: Fault | None) -> None:
        self.fault, self.seen = fault, 0

    def __call__(self, command: bytes, forward) -> bytes | None:
        k = self.seen
        self.seen += 1
        response = forward(command)
        if self.fault is not None and self.fault.k == k:
            return self.fault.apply(response)
        return response


class Sweep:
    """swtpm + proxy + a long-lived login worker; one login per `login()`."""

    def __init__(self, swtpm, workdir: str) -> None:
        self.swtpm = swtpm
        self.injector = Injector()
        self.proxy = TpmProxy(swtpm.sock, os.path.join(swtpm.state_dir, "px"), self.injector)
        self.policy = os.path.join(workdir, "policy")
        self.enrolments = os.path.join(workdir, "enrolments")
        with open(self.policy, "w") as f:
            f.write(f"tcti = {self.proxy.tcti}\nhelper_timeout = 20\n"
                    f"state_dir = {workdir}\n")
        self.direct = Tpm(swtpm.tcti)  # the oracle's own connection, never faulted
        self.worker: subprocess.Popen | None = None

    def start(self) -> None:
        self.proxy.start()
        self.worker = subprocess.Popen(
            [sys.executable, "-I", "-c", _WORKER, ROOT, self.policy],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"}, text=True, bufsize=1)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stdin.close()
            self.worker.wait(timeout=30)
        self.proxy.stop()
        self.direct.close()

    def counter(self) -> int:
        return int.from_bytes(sapi.read_nv_as_owner(self.direct, HANDLE, NAME, 8)[:4], "big")

    def loaded(self) -> list[int]:
        return self.swtpm.loaded_handles()

    def flush(self, handle: int) -> bool:
        if handle not in self.loaded():
            return False
        self.swtpm.flush(handle)
        return True

    def login(self, pin: str, fault: Fault | None):
        """(outcome, exchanges, failures the TPM counted, whether it accepted the PIN)
        of one login with `fault`."""
        self.proxy.clear()
        self.injector.arm(fault)
        self.worker.stdin.write(pin + "\n")
        line = self.worker.stdout.readline()
        assert line, f"the login worker died on {fault}: {self.worker.stderr.read()[-2000:]}"
        exchanges = list(self.proxy.exchanges)
        answers = [response_code(e.tpm_response) for e in exchanges
                   if e.code == CC_NV_READ and _is_pin_read(e.command) and e.forwarded]
        return (json.loads(line), exchanges, answers.count(RC_BAD_AUTH_SESSION_1),
                0 in answers)


def orphan_handle(fault: Fault, exchanges, flush) -> list[int]:
    """Flush (out of band) what the TPM created in the faulted exchange and the client
    could not know about: the handle in a StartAuthSession or CreatePrimary answer
    that was dropped, cut or altered. Only a resource manager can clean those up after
    the client; here three of them fill swtpm's session slots and every later check
    fails with TPM_RC_SESSION_MEMORY (why `device:/dev/tpm0` is refused)."""
    if fault.k >= len(exchanges):
        return []
    exchange = exchanges[fault.k]
    if exchange.code not in (CC_START_AUTH_SESSION, CC_CREATE_PRIMARY) \
            or not exchange.forwarded or response_code(exchange.tpm_response) != 0:
        return []
    created = int.from_bytes(exchange.tpm_response[HEADER.size:HEADER.size + 4], "big")
    return [created] if flush(created) else []  # False: the client did flush it


def _is_pin_read(command: bytes) -> bool:
    (auth_handle, index), _, _ = parse_command(command, 2)
    return auth_handle == index


def faults_for(responses: list[bytes]) -> list[Fault]:
    """Every fault on every response: drop, each truncation, each corrupted byte."""
    out = []
    for k, response in enumerate(responses):
        out.append(Fault(k, "drop"))
        out += [Fault(k, "truncate", n) for n in range(len(response))]
        out += [Fault(k, "corrupt", n) for n in range(len(response))]
    return out


@pytest.fixture
def sweep(swtpm):
    workdir = tempfile.mkdtemp(prefix="pypam-faults-", dir="/tmp")
    with Tpm(swtpm.tcti) as tpm:
        name = sapi.salt_key_name(tpm, persist=False)
        PinIndex(tpm, HANDLE, name).define(PIN.encode(), LIMIT)
    salt_key.save(os.path.join(workdir, "salt_key"), name)
    s = Sweep(swtpm, workdir)
    enrolment.write(s.enrolments, enrolment.EnrolmentRecord(
        uid=UID, user="root", nv_index=HANDLE, enrolled=enrolment.now_utc()), as_root=True)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        subprocess.run(["rm", "-rf", workdir], check=True)


@pytest.mark.parametrize("salt_key_kind", ["persistent", "transient"])
@pytest.mark.parametrize("typed", [WRONG, PIN], ids=["wrong-pin", "right-pin"])
def test_every_fault_on_every_response_holds(sweep, typed, salt_key_kind, record_property):
    if salt_key_kind == "persistent":
        assert sapi.persist_salt_key(sweep.direct) == "ours"
    outcome, reference, _, _ = sweep.login(typed, None)
    assert outcome == ("success" if typed == PIN else "WrongPin")
    responses = [e.reply for e in reference]
    faults = faults_for(responses)
    outcomes: dict[str, int] = {}
    lost_handles = 0
    for fault in faults:
        before = sweep.counter()
        outcome, exchanges, counted, accepted = sweep.login(typed, fault)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert not outcome.startswith("BUG"), (fault, outcome)
        if typed == WRONG:
            assert outcome != "success", fault
        # The counter moves only as the TPM said: +1 for each PIN read it answered with
        # BAD_AUTH (a right PIN too, when the fault garbled the session: the TPM then
        # sees a wrong HMAC), back to 0 when it accepted the PIN.
        assert counted <= 1  # a PIN is never resent
        expected = 0 if accepted else before + counted
        assert sweep.counter() == expected, (fault, outcome)
        if outcome == "WrongPin":
            assert counted == 1, fault  # reported as counted only when it was
        lost_handles += len(orphan_handle(fault, exchanges, sweep.flush))
        assert sweep.loaded() == [], (fault, outcome, [hex(e.code) for e in exchanges])
    record_property("faults", len(faults))
    record_property("outcomes", outcomes)
    print(f"\n{typed=} {salt_key_kind}: {len(responses)} responses "
          f"({sum(map(len, responses))} bytes), {len(faults)} faults, outcomes {outcomes}, "
          f"{lost_handles} handles lost with their answer (flushed out of band)")
    # The sweep did hit the PIN read itself (not only the status read before it).
    assert any(e.code == CC_NV_READ and _is_pin_read(e.command) for e in reference)
    assert sweep.swtpm.tools("tpm2_getcap", "handles-transient").stdout.strip() == b""
    assert sweep.swtpm.tools("tpm2_getcap", "handles-loaded-session").stdout.strip() == b""


# ---- a sample through the real PAM host -----------------------------------------------------
@pytest.mark.parametrize("backend", ["direct", "helper"])
def test_faults_through_the_pam_host_never_log_in(pin_env, backend):
    pin_env.write_policy(pin_lockout_max_attempts=100)  # more faults than that never lock
    done = pin_env.pinutil("--json", "--stdin", "setup", "root", stdin=PIN + "\n")
    assert done.returncode == 0, done.stderr
    injector = Injector()
    proxy = TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.swtpm.state_dir, "px"), injector)
    proxy.start()
    try:
        pin_env.write_policy(tcti=proxy.tcti, pin_lockout_max_attempts=100)

        def flush_out_of_band(handle: int) -> bool:
            return pin_env.swtpm.tools("tpm2_flushcontext", hex(handle), check=False).returncode == 0

        service = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend))
        injector.arm(None)
        reference = pin_env.run(service, user="root", answers=[WRONG])
        responses = [e.reply for e in proxy.exchanges]
        assert len(responses) >= 5
        failures = pin_env.failures("root")
        faults = lost = 0
        for k, response in enumerate(responses):
            for fault in (Fault(k, "drop"), Fault(k, "truncate", len(response) - 1),
                          Fault(k, "corrupt", len(response) - 1)):
                proxy.clear()
                injector.arm(fault)
                report = pin_env.run(service, user="root", answers=[WRONG])
                assert report["exit_status"] == 0 and report["stderr"] == "", (fault, report)
                assert result_code(report, "auth") != PAM_SUCCESS, fault
                counted = sum(1 for e in proxy.exchanges
                              if e.code == CC_NV_READ and _is_pin_read(e.command)
                              and e.forwarded
                              and response_code(e.tpm_response) == RC_BAD_AUTH_SESSION_1)
                lost += len(orphan_handle(fault, list(proxy.exchanges), flush_out_of_band))
                assert pin_env.failures("root") - failures == counted, fault
                failures = pin_env.failures("root")
                faults += 1
        assert reference["exit_status"] == 0
        print(f"\n{backend}: {faults} faults through the PAM host, none logged in, "
              f"{lost} handles lost with their answer")
    finally:
        proxy.stop()
    for kind in ("handles-transient", "handles-loaded-session"):
        assert pin_env.swtpm.tools("tpm2_getcap", kind).stdout.strip() == b"", kind
