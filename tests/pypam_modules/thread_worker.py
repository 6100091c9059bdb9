"""Starts one daemon thread per process that keeps running Python (and allocating)
while PAM calls come and go; used for the fork-while-a-thread-runs test."""
import threading

import pypam

_started = threading.Event()
_thread = None


def _work():
    _started.set()
    junk = []
    while True:
        junk.append({"n": len(junk), "s": "x" * 64})
        if len(junk) > 1000:
            junk.clear()


def authenticate(pamh, flags, args):
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_work, name="pypam-test-worker", daemon=True)
        _thread.start()
        _started.wait(5)
    if not _thread.is_alive() and threading.current_thread() is threading.main_thread():
        # In a forked child only the forking thread survives; that is expected.
        pass
    return pypam.PAM_SUCCESS
