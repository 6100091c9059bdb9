"""Eight clients at once through one pinutild: every request answered, and the TPM's
counter (read out of band with tpm2-tools) exactly what the answers said. The TPM
worker serialises them; nothing is lost, doubled or answered for another client."""
from __future__ import annotations

import threading

from pinutil.service import client
from tests.support.pinutild import start_pinutild

PIN, WRONG = "1234", b"9999"
CLIENTS = 8


def _in_parallel(service, requests_per_client: int, fields: dict) -> list[dict]:
    replies: list[dict] = []
    lock = threading.Lock()

    def one_client() -> None:
        for _ in range(requests_per_client):
            try:
                reply = client.call(service.socket, fields, 60)
            except Exception as e:  # noqa: BLE001 - recorded, then asserted on
                reply = {"raised": repr(e)}
            with lock:
                replies.append(reply)

    threads = [threading.Thread(target=one_client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_eight_clients_exact_counters(pin_env):
    pin_env.write_policy(pin_lockout_max_attempts="100")
    done = pin_env.pinutil("--json", "--stdin", "setup", "root", stdin=PIN + "\n")
    assert done.returncode == 0, done.stderr
    # No per-user delay: 80 wrong PINs in a row for one user are what this test needs
    # (tests/service/test_throttle_service.py tests the delay).
    service = start_pinutild(pin_env, "--tpm-timeout", "60", "--pin-delay-max", "0")
    try:
        wrong = _in_parallel(service, 10, {"verb": "pin-check", "user": "root", "pin": WRONG})
        assert {r.get("result") for r in wrong} == {"wrong_pin"}, wrong
        # Each wrong PIN was counted once, in some order: 99, 98, ... 20 left.
        assert sorted(r["attempts_left"] for r in wrong) == list(range(20, 100))
        assert pin_env.counter("root") == (80, 100)

        right = _in_parallel(service, 25, {"verb": "pin-check", "user": "root",
                                           "pin": PIN.encode()})
        assert right == [{"result": "success"}] * (CLIENTS * 25)
        assert pin_env.counter("root") == (0, 100)
        assert service.alive()
    finally:
        service.stop()
