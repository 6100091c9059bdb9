"""Hostile and broken clients never stall a well-behaved one nor crash pinutild.

Each test runs its own service on its own swtpm. Hostile clients are raw sockets: slow
(a few header bytes, then nothing), huge (a header announcing 4 GiB), truncated,
garbage, many at once, and a flood from one user. No timing is asserted: the hostile
connections are held open for far longer than the well-behaved client is willing to
wait (`--request-timeout 300` against a 20 s client), so a service that served them
in turn would fail these tests instead of being slow.
"""
from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest

from pinutil import errors
from pinutil.service import protocol
from tests.support.accounts import AS_NOBODY
from tests.support.pinutild import PYTHON, start_pinutild
from tests.support.tpm_gate import gated_tpm

PIN = "1234"
PATIENT_HOSTILE = ("--request-timeout", "300")


def raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(path)
    return sock


def exchange(path: str, data: bytes) -> bytes:
    """Send `data`, close our write side, and read until the service closes. A reset
    (the service closed with our unread bytes still queued: the kernel then resets)
    counts as what we read until then."""
    chunks = []
    with raw(path) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    return b"".join(chunks)


def body(*fields: tuple[bytes, bytes, bytes], version: int = 1, count: int | None = None) -> bytes:
    parts = [bytes((version, len(fields) if count is None else count))]
    for name, kind, value in fields:
        parts.append(bytes((len(name),)) + name + kind + len(value).to_bytes(2, "big") + value)
    data = b"".join(parts)
    return len(data).to_bytes(4, "big") + data


VERB = (b"verb", b"s", b"pin-check")
USER = (b"user", b"s", b"root")
GOOD_PIN = (b"pin", b"b", PIN.encode())

MALFORMED = {
    "huge header": (0xFFFFFFFF).to_bytes(4, "big"),
    "empty body": (0).to_bytes(4, "big"),
    "one-byte body": (1).to_bytes(4, "big") + b"\x01",
    "too large by one": (protocol.MAX_BODY + 1).to_bytes(4, "big") + bytes(protocol.MAX_BODY + 1),
    "version 2": body(VERB, USER, GOOD_PIN, version=2),
    "version 0": body(VERB, USER, GOOD_PIN, version=0),
    "count beyond the fields": body(VERB, USER, GOOD_PIN, count=4),
    "count short of the fields": body(VERB, USER, GOOD_PIN, count=2),
    "too many fields": body(*[(f"f{i}".encode(), b"n", b"") for i in range(17)]),
    "field twice": body(VERB, USER, GOOD_PIN, (b"user", b"s", b"nobody")),
    "unknown verb": body((b"verb", b"s", b"pin-reset"), USER),
    "no verb": body(USER, GOOD_PIN),
    "missing field": body(VERB, USER),
    "extra field": body(VERB, USER, GOOD_PIN, (b"uid", b"i", bytes(8))),
    "PIN as text": body(VERB, USER, (b"pin", b"s", PIN.encode())),
    "user as bytes": body(VERB, (b"user", b"b", b"root"), GOOD_PIN),
    "bad name": body((b"Verb", b"s", b"pin-check"), USER, GOOD_PIN),
    "unknown type": body(VERB, USER, (b"pin", b"x", PIN.encode())),
    "value beyond the body": body(VERB, USER)[:-4] + b"\xff\xff" + b"root",
    "short integer": body(VERB, USER, GOOD_PIN, (b"n", b"i", b"\x01")),
    "true with a value": body(VERB, USER, GOOD_PIN, (b"t", b"t", b"1")),
    "invalid UTF-8": body(VERB, (b"user", b"s", b"ro\xffot"), GOOD_PIN),
    "lone surrogate": body(VERB, (b"user", b"s", b"\xed\xa0\x80"), GOOD_PIN),
    "garbage": bytes(range(256)) * 16,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_requests_are_refused_and_change_nothing(pin_env, pinutild, name):
    pin_env.enrol("root", PIN)
    answer = exchange(pinutild.socket, MALFORMED[name])
    if answer:  # refused with a reason; a frame cut short gets no answer at all
        reply = protocol.decode_frame(answer)
        assert reply["result"] == "bad_request", reply
    assert pinutild.alive()
    assert pin_env.counter("root") == (0, 3)
    assert pinutild.ask(verb="pin-check", user="root", pin=PIN.encode())["result"] == "success"


def test_truncated_requests_get_no_answer(pin_env, pinutild):
    pin_env.enrol("root", PIN)
    whole = body(VERB, USER, (b"pin", b"b", b"9999"))
    for cut in range(len(whole)):
        assert exchange(pinutild.socket, whole[:cut]) == b""
    assert pin_env.counter("root") == (0, 3)  # no cut-off request ever reached the TPM
    assert pinutild.alive()


def test_fifty_hostile_clients_at_once_do_not_stall_a_good_one(pin_env):
    pin_env.enrol("root", PIN)
    service = start_pinutild(pin_env, *PATIENT_HOSTILE)
    held = []
    try:
        for i in range(50):
            sock = raw(service.socket)
            kind = i % 5
            if kind == 0:  # slow loris: part of a header, then nothing
                sock.sendall(b"\x00\x00")
            elif kind == 1:  # a body announced and never sent in full
                sock.sendall((protocol.MAX_BODY).to_bytes(4, "big") + b"\x01\x03")
            elif kind == 2:  # connected, silent
                pass
            elif kind == 3:  # a whole request, reply never read, connection kept
                sock.sendall(body((b"verb", b"s", b"pin-status"), USER))
            else:  # garbage, answered and closed by the service
                sock.sendall(b"\xff" * 4)
            held.append(sock)
        reply = service.ask(seconds=20, verb="pin-check", user="root", pin=PIN.encode())
        assert reply == {"result": "success"}
        assert service.alive()
    finally:
        for sock in held:
            sock.close()
        service.stop()


_FLOOD = """
import socket, sys, time
held = []
for _ in range(300):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
        s.send(b"\\x00")
    except OSError:  # beyond the cap the service closes at once: EPIPE, ECONNRESET
        pass
    held.append(s)
print("ready", flush=True)
time.sleep(300)
"""


def test_one_users_flood_does_not_take_the_others_slots(pin_env):
    """300 connections from nobody (more than the global cap of 256): the per-uid cap
    keeps 16 of them, so root's login still gets its answer."""
    pin_env.enrol("root", PIN)
    service = start_pinutild(pin_env, *PATIENT_HOSTILE)
    flood = subprocess.Popen([*AS_NOBODY, PYTHON, "-I", "-c", _FLOOD, service.socket],
                             stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert flood.stdout.readline() == "ready\n"
        reply = service.ask(seconds=20, verb="pin-check", user="root", pin=PIN.encode())
        assert reply == {"result": "success"}
    finally:
        flood.kill()
        flood.wait()
        service.stop()


def wait_until_answering(service, tries: int = 600) -> None:
    """Poll pin-status until the breaker closes (the stuck request has returned)."""
    for _ in range(tries):
        if service.ask(verb="pin-status", user="root")["result"] == "success":
            return
        time.sleep(0.05)
    raise AssertionError("pinutild did not recover after the TPM resumed")


def test_hung_tpm_trips_the_breaker_and_a_queued_pin_is_never_sent(pin_env):
    """The TPM stops answering: the request in progress and one queued behind it get
    tpm_unavailable; while it stays stuck a new request gets it at once (the breaker's
    message); after the TPM answers again, the queued wrong PIN was never sent (counter
    0) and logins work again."""
    pin_env.enrol("root", PIN)
    proxy, gate = gated_tpm(pin_env)
    service = start_pinutild(pin_env, "--tpm-timeout", "5")
    try:
        replies = {}

        def ask(name, **fields):
            replies[name] = service.ask(**fields)

        first = threading.Thread(target=ask, args=("first",),
                                 kwargs={"verb": "pin-status", "user": "root"})
        first.start()
        assert gate.seen.wait(60)  # the first request is with the worker, stuck
        queued = threading.Thread(target=ask, args=("queued",),
                                  kwargs={"verb": "pin-check", "user": "root", "pin": b"9999"})
        queued.start()
        first.join()
        queued.join()
        assert replies["first"]["result"] == "tpm_unavailable", replies
        # Queued behind the stuck request, not refused by the breaker: the wrong PIN
        # was waiting when the worker was killed (the case under test).
        assert replies["queued"] == replies["first"], replies
        tripped = service.ask(verb="pin-check", user="root", pin=b"9999")
        assert tripped["result"] == "tpm_unavailable"
        assert "pinutild is probing it" in tripped["error"]  # the breaker, at once
        gate.open()
        wait_until_answering(service)  # after the stuck request and anything queued
        assert pin_env.counter("root") == (0, 3)  # before a good PIN would reset it
        assert service.ask(verb="pin-check", user="root", pin=PIN.encode()) == \
            {"result": "success"}
        assert service.alive()
    finally:
        gate.open()
        service.stop()
        proxy.stop()


def test_a_client_that_leaves_has_its_queued_pin_dropped(pin_env):
    """A wrong PIN queued behind a request the TPM is busy with, whose client leaves
    before its turn: it is never sent (counter 0), and the next login works."""
    pin_env.enrol("root", PIN)
    proxy, gate = gated_tpm(pin_env)
    service = start_pinutild(pin_env, "--tpm-timeout", "60")
    try:
        replies = []
        first = threading.Thread(target=lambda: replies.append(
            service.ask(verb="pin-status", user="root")))
        first.start()
        assert gate.seen.wait(60)  # the first request is with the worker, held
        with raw(service.socket) as sock:  # a wrong PIN queued behind it, then gone
            sock.sendall(body(VERB, USER, (b"pin", b"b", b"9999")))
            sock.shutdown(socket.SHUT_WR)
            # The service closes its end only when it has seen us leave (so it knows
            # before the TPM is free), and never answers a client that left.
            assert sock.recv(1) == b""
        gate.open()
        first.join()
        assert [r["result"] for r in replies] == ["success"], replies
        # One request at a time, in order: once this one is answered, a queued wrong
        # PIN would have been sent. Read before a good PIN would reset the counter.
        assert service.ask(verb="pin-status", user="root")["failures"] == 0
        assert pin_env.counter("root") == (0, 3)
        assert service.ask(verb="pin-check", user="root", pin=PIN.encode()) == \
            {"result": "success"}
    finally:
        gate.open()
        service.stop()
        proxy.stop()


# ---- many random clients at once (deterministic seeds) --------------------------------
CHAOS_CLIENTS = 24
CHAOS_ACTIONS = 15
GOOD_CHECKS = 20
RESULTS = {"success", "bad_request"} | {cls.token for cls in errors.VOCABULARY}
TEMPLATES = [  # what the random clients start from: never the good client's user
    body(VERB, USER, (b"pin", b"b", b"9999")),
    body(VERB, USER, (b"pin", b"b", b"99999999")),
    body((b"verb", b"s", b"pin-status"), USER),
    body((b"verb", b"s", b"master-key-token"), USER),
    body(VERB, (b"user", b"s", b"no-such-user-x"), (b"pin", b"b", b"9999")),
]


def random_frame(rng) -> bytes:
    """A frame as a random client sends it: garbage, a valid one, or a mutated one."""
    kind = rng.randrange(4)
    if kind == 0:
        return rng.randbytes(rng.choice((1, 3, 4, 5, 17, 300, 5000)))
    frame = bytearray(rng.choice(TEMPLATES))
    if kind == 1:
        return bytes(frame)
    if kind == 2:  # a few bytes changed
        for _ in range(rng.randint(1, 4)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        return bytes(frame)
    if rng.random() < 0.5:  # longer or shorter than its header says
        return bytes(frame) + rng.randbytes(rng.randint(1, 64))
    return bytes(frame[:rng.randrange(len(frame))])


def chaos_client(path: str, seed: int, problems: list) -> None:
    """CHAOS_ACTIONS connections, each with a random frame, sent whole or trickled in
    random pieces, closed at a random point or after reading what comes back. Any
    reply must be one well-formed frame with a known result; a wrong PIN's never
    `success`."""
    import random

    rng = random.Random(seed)
    for _ in range(CHAOS_ACTIONS):
        frame = random_frame(rng)
        how = rng.choice(("whole", "trickle", "close early", "half close"))
        try:
            with raw(path) as sock:
                if how == "close early":  # a random close point, no reading
                    sock.sendall(frame[:rng.randrange(len(frame) + 1)])
                    continue
                at = 0
                while how == "trickle" and at < min(len(frame), 120):  # then the rest
                    step = rng.randint(1, 7)
                    sock.sendall(frame[at:at + step])
                    at += step
                    time.sleep(rng.random() / 100)
                sock.sendall(frame[at:])
                if how == "half close":
                    sock.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
        except (ConnectionResetError, BrokenPipeError):
            continue  # the service closed on us (a frame it refused whole): allowed
        except OSError as e:
            problems.append(f"seed {seed}: {how}: {e!r}")
            continue
        if not answer:
            continue  # a frame cut short: no answer at all
        try:
            reply = protocol.decode_frame(answer)
        except protocol.ProtocolError as e:
            problems.append(f"seed {seed}: a malformed reply ({e}) to {frame!r}")
            continue
        if reply.get("result") not in RESULTS:
            problems.append(f"seed {seed}: reply {reply!r} to {frame!r}")
        elif reply["result"] == "success" and b"pin-check" in frame:
            problems.append(f"seed {seed}: success for {frame!r}")


def test_many_random_clients_at_once_never_crash_it_nor_stall_a_good_one(pin_env):
    """CHAOS_CLIENTS threads of random frames, close points and trickles against one
    service, aimed at root's PIN; meanwhile a good client checks nobody's PIN
    GOOD_CHECKS times: every check succeeds (a stall would be its timeout), the
    service lives, and nobody's counter never moved."""
    pin_env.enrol("root", PIN)
    pin_env.enrol("nobody", PIN)
    # Clients that send part of a frame and wait are cut off after 2 s (not 5): the
    # run is shorter, and the cut-off is part of what is tested.
    service = start_pinutild(pin_env, "--request-timeout", "2")
    problems: list[str] = []
    threads = [threading.Thread(target=chaos_client, args=(service.socket, seed, problems))
               for seed in range(CHAOS_CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        good = [service.ask(seconds=20, verb="pin-check", user="nobody", pin=PIN.encode())
                for _ in range(GOOD_CHECKS)]
        for thread in threads:
            thread.join()
        assert good == [{"result": "success"}] * GOOD_CHECKS
        assert problems == []
        assert service.alive(), service.output()
        assert "Traceback" not in service.output()
        assert pin_env.counter("nobody") == (0, 3)
        assert service.ask(verb="pin-check", user="nobody", pin=PIN.encode()) == \
            {"result": "success"}
    finally:
        service.stop()
        for thread in threads:
            thread.join()
