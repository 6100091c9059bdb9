"""pinutild's queue of requests waiting for the TPM worker: round-robin per caller uid.

Why not one FIFO: the TPM serves one request at a time, and one uid may have up to
16 requests queued (the per-uid connection cap). In a FIFO another user's single
login waited behind all of them; here each uid with something queued gets one turn
in rotation, so a login waits behind at most one request of each other uid, however
many requests a flooding uid has queued. Within one uid the order stays FIFO.

Pure data structure (no I/O, no clock): the server pushes and pops jobs; a job
object only needs a `cancelled` attribute (a cancelled job is dropped when its turn
comes, never returned).
"""
from __future__ import annotations

from collections import deque


class FairQueue:
    """Jobs queued per uid, taken in rotation over the uids that have any."""

    __slots__ = ("_by_uid", "_turns")

    def __init__(self) -> None:
        self._by_uid: dict[int, deque] = {}
        self._turns: deque[int] = deque()  # uids with queued jobs, next turn first

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_uid.values())

    def push(self, uid: int, job) -> None:
        jobs = self._by_uid.get(uid)
        if jobs is None:  # a uid with nothing queued joins the rotation at its end
            jobs = self._by_uid[uid] = deque()
            self._turns.append(uid)
        jobs.append(job)

    def pop(self):
        """The next job that is not cancelled (None: none queued)."""
        while self._turns:
            job = self._take()
            if not job.cancelled:
                return job
        return None

    def drain(self) -> list:
        """Every queued job (cancelled ones too), in the order pop would have given
        them; the queue is then empty."""
        return [self._take() for _ in range(len(self))]

    def _take(self):
        """The job whose turn it is; its uid goes to the end of the rotation when it
        has more queued."""
        uid = self._turns.popleft()
        jobs = self._by_uid[uid]
        job = jobs.popleft()
        if jobs:
            self._turns.append(uid)
        else:
            del self._by_uid[uid]
        return job
