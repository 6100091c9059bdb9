"""The PAM side's client of pinutild (pinutil/service/client.py) against a plain
listener the test controls, so the socket's state is exact rather than raced."""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import pytest

from pinutil import errors
from pinutil.service import client, protocol


def _fill_listen_queue(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A listener that accepts nothing, its queue filled until connect says EAGAIN."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return listener, fillers
        fillers.append(s)


def test_a_full_listen_queue_delays_the_request_instead_of_failing_it():
    """A flood that fills the service's listen queue must not cost a login its answer:
    the client tries again until its deadline. (It failed at once with EAGAIN.)"""
    with tempfile.TemporaryDirectory(prefix="pypam-client-") as d:
        path = os.path.join(d, "sock")
        listener, fillers = _fill_listen_queue(path)
        answers = {}

        def ask():
            try:
                answers["reply"] = client.call(path, {"verb": "pin-status", "user": "root"}, 20)
            except errors.PinutilError as e:
                answers["error"] = str(e)

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(0.2)  # not a synchronisation: only lets the old code fail at once
        for s in fillers:  # the service catches up: the queue drains
            s.close()
        listener.settimeout(20)
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                try:
                    header = conn.recv(protocol.HEADER_SIZE, socket.MSG_WAITALL)
                except ConnectionError:
                    continue                      # a filler, closed before it was served
                if len(header) < protocol.HEADER_SIZE:
                    continue
                body = conn.recv(protocol.body_length(header), socket.MSG_WAITALL)
                assert protocol.decode_body(body)["verb"] == "pin-status"
                conn.sendall(protocol.encode({"result": "success"}))
                break
        asking.join(20)
        listener.close()
        assert answers == {"reply": {"result": "success"}}


def test_a_full_listen_queue_that_never_drains_times_out():
    with tempfile.TemporaryDirectory(prefix="pypam-client-") as d:
        path = os.path.join(d, "sock")
        listener, fillers = _fill_listen_queue(path)
        try:
            with pytest.raises(errors.TpmUnavailable, match="did not answer within"):
                client.call(path, {"verb": "pin-status", "user": "root"}, 0.3)
        finally:
            for s in fillers:
                s.close()
            listener.close()
