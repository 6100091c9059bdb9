"""The queue in front of pinutild's TPM worker takes turns per uid (unit tests of the
pure data structure; tests/service/test_fairness.py shows it through a real service)."""
from __future__ import annotations

from pinutil.service.fairqueue import FairQueue


class Job:
    def __init__(self, name: str) -> None:
        self.name, self.cancelled = name, False


def names(queue: FairQueue) -> list[str]:
    taken = []
    while (job := queue.pop()) is not None:
        taken.append(job.name)
    return taken


def test_one_uids_flood_does_not_hold_up_another_uids_single_request():
    queue = FairQueue()
    for i in range(16):
        queue.push(1000, Job(f"flood{i}"))
    queue.push(0, Job("login"))
    taken = names(queue)
    assert taken.index("login") == 1  # after the flood's first, not after all 16
    assert [n for n in taken if n != "login"] == [f"flood{i}" for i in range(16)]


def test_turns_rotate_over_the_uids_and_keep_each_uids_order():
    queue = FairQueue()
    for name, uid in [("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3), ("b2", 2)]:
        queue.push(uid, Job(name))
    assert names(queue) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_uid_that_comes_back_joins_at_the_end_of_the_rotation():
    queue = FairQueue()
    queue.push(1, Job("a1"))
    queue.push(2, Job("b1"))
    assert queue.pop().name == "a1"
    queue.push(1, Job("a2"))  # uid 1 had nothing queued: it waits for uid 2's turn
    assert names(queue) == ["b1", "a2"]


def test_cancelled_jobs_are_skipped_and_drain_returns_everything():
    queue = FairQueue()
    jobs = [Job(str(i)) for i in range(4)]
    for i, job in enumerate(jobs):
        queue.push(i % 2, job)
    jobs[0].cancelled = True
    assert queue.pop().name == "1"
    assert len(queue) == 2
    assert [job.name for job in queue.drain()] == ["2", "3"]
    assert len(queue) == 0 and queue.pop() is None
