"""Starts one daemon thread per process that keeps running Python (and holding the GIL)
while PAM calls come and go; used for the fork-while-a-thread-runs test."""
import threading

import pypam

_started = threading.Event()
_thread = None


def _work():
    _started.set()
    junk = []
    while True:
        # sum() over a range is one long C call that keeps the GIL (tens of ms), so a
        # fork very likely happens while this thread holds it.
        junk.append(sum(range(3_000_000)))
        junk.append({"n": len(junk), "s": "x" * 64})
        if len(junk) > 1000:
            junk.clear()


def authenticate(pamh, flags, args):
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_work, name="pypam-test-worker", daemon=True)
        _thread.start()
        _started.wait(5)
    return pypam.PAM_SUCCESS
