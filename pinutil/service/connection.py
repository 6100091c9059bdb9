"""What pinutild's event loop (server.py) keeps per client connection and per request
for the TPM worker, and the one way it frames what it sends.

A connection moves READING (its request, or the answer to a prompt) -> WORKING (its
request waits for, or is with, the TPM worker) -> WRITING (a reply, or a prompt whose
answer it then reads) and, during pin-setup's password proof, PROVING (the proof
process talks to the client: conversation.py).
"""
from __future__ import annotations

import socket

from pinutil.service import protocol, prover
from pinutil.users import User

READING, WORKING, WRITING, PROVING = range(4)


class Connection:
    __slots__ = ("account", "buffer", "caller", "deadline", "job", "need", "pending", "proof",
                 "proven", "reply", "sock", "state")

    def __init__(self, sock: socket.socket, caller: User, deadline: float) -> None:
        self.sock, self.caller, self.deadline = sock, caller, deadline
        # The uid it counts under (the per-uid cap, the queue's turns): the caller's,
        # or from its request on the uid a root client acts for (server.py).
        self.account = caller.uid
        self.buffer = bytearray()
        self.need = protocol.HEADER_SIZE
        self.state = READING
        self.job: Job | None = None
        self.reply = b""
        # pin-setup's conversation: the request waiting for its new PIN, the password
        # proof running for it, and whether one succeeded (enrolment.md in docs/pinutild).
        self.pending: dict | None = None
        self.proof: prover.Proof | None = None
        self.proven = False


class Job:
    __slots__ = ("cancelled", "connection", "deadline", "fields", "verb")

    def __init__(self, connection: Connection | None, verb: str, fields: dict) -> None:
        self.connection, self.verb, self.fields = connection, verb, fields
        self.deadline = None  # set when the worker takes it: queueing is not TPM time
        self.cancelled = False


def frame(fields: dict) -> bytes:
    return protocol.encode(fields)


def unavailable(why: str) -> bytes:
    return frame({"result": "tpm_unavailable", "error": why})


def count_one_less(counts: dict[int, int], uid: int) -> None:
    """Take one off `uid`'s count of open connections or running proofs; a count that
    reaches 0 leaves the table (it holds only uids with something open)."""
    if counts[uid] > 1:
        counts[uid] -= 1
    else:
        del counts[uid]
