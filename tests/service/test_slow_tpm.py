"""A slow TPM (a hardware TPM can take a quarter second for a salted check) is not a
hung one: requests that merely wait their turn must not count that wait as TPM time."""
from __future__ import annotations

import os
import threading
import time

from tests.support.pinutild import start_pinutild
from tests.support.tpm_proxy import TpmProxy

PIN = "1234"
CLIENTS = 8
COMMAND_DELAY_S = 0.1  # every TPM command: one check is ~0.5 s, the 8 queue ~4 s
TPM_TIMEOUT_S = "2"


def slow_tpm(command: bytes, forward):
    time.sleep(COMMAND_DELAY_S)
    return forward(command)


def test_checks_queued_behind_a_slow_tpm_never_trip_the_breaker(pin_env):
    """8 correct PINs at once through a TPM that takes 0.1 s a command: together they
    wait longer than --tpm-timeout, none takes that long alone. The ones the TPM
    reaches succeed, the ones still queued at the limit are told the service is busy
    (never sent), no attempt is counted, and the next login is served at once. (The
    server used to start a request's TPM time when it was queued: a request that had
    only waited tripped the breaker, killing the check in progress and answering
    everyone "the TPM did not answer".)"""
    pin_env.enrol("root", PIN)
    with TpmProxy(pin_env.swtpm.sock, os.path.join(pin_env.dir, "px"), slow_tpm) as proxy:
        pin_env.write_policy(tcti=proxy.tcti)
        service = start_pinutild(pin_env, "--tpm-timeout", TPM_TIMEOUT_S)
        replies: list[dict | None] = [None] * CLIENTS

        def check(i: int) -> None:
            replies[i] = service.ask(seconds=120, verb="pin-check", user="root",
                                     pin=PIN.encode())

        try:
            threads = [threading.Thread(target=check, args=(i,)) for i in range(CLIENTS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = service.ask(seconds=120, verb="pin-check", user="root", pin=PIN.encode())
        finally:
            service.stop()
    busy = [r for r in replies if r != {"result": "success"}]
    assert {"result": "success"} in replies
    assert all(r["result"] == "tpm_unavailable" and "busy" in r["error"] for r in busy), busy
    assert after == {"result": "success"}
    assert pin_env.counter("root")[0] == 0
