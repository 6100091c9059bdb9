"""Bound a blocking TPM call by a deadline.

Neither tcti-swtpm nor the synchronous Esys calls honour a timeout (tpm2-tss 3.2.1:
see tpm.py), so a hung TPM would hang the PAM host for as long as the TPM does.
"""
from __future__ import annotations

import _thread  # not `threading`: a builtin, nothing more to import on the login path

from . import errors


def run_within(seconds: float, function, *args):
    """`function(*args)` in a worker thread; its result or exception, or TpmUnavailable
    after `seconds`.

    A worker still blocked on a hung TPM is abandoned, not killed (a thread cannot be):
    it holds only its own ESYS context and never touches the PAM handle, and if the TPM
    wakes up it finishes its call and closes the context. A PIN already sent is never
    resent, so the TPM counts it at most once (as when a TPM dies mid-check).
    The caller releases the GIL while it waits, and cffi releases it around every
    Esys call, so a blocked worker cannot block the caller.
    """
    done = _thread.allocate_lock()
    done.acquire()
    outcome: list = []

    def work() -> None:
        try:
            outcome.append((True, function(*args)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller as is
            outcome.append((False, e))
        finally:
            done.release()

    _thread.start_new_thread(work, ())
    if not done.acquire(timeout=seconds):
        raise errors.TpmUnavailable(f"the TPM did not answer within {seconds:g} s")
    ok, value = outcome.pop()  # no cycle: a traceback's frames see an empty list
    if ok:
        return value
    raise value
