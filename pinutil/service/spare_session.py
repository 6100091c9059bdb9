"""The TPM worker's spare salted session: started while the worker is idle, spent by
the next PIN check, so that check sends 2 TPM commands instead of 4.

Why: a salted PIN check starts its HMAC session with ReadPublic (the salt key) and
StartAuthSession (an ECDH inside the TPM), the dearest part of the check: ~0.5 ms of
the ~0.7 ms a check costs on swtpm, tens of milliseconds on TPM chips. Nothing in
that session depends on the user or the PIN (no bind entity, no authValue yet), so
the worker starts it while nobody waits (typically while a user types the PIN that
the previous pin-status prompted for) and the check only verifies the index and
sends its one NV_Read.

The rules that keep this as safe as a session started by the check itself:
- it is salted with the salt key whose Name root recorded (sapi.start_salted_session
  refuses any other key), and is taken only if the record still holds that Name;
- it belongs to one `Tpm` connection (the worker's kept one, verbs.kept_tpm) and is
  taken only for that very connection; when that connection closes (any error does
  it) the spare is flushed first;
- it is used once: taking it empties the slot, and the check's NV_Read has no
  continueSession, so the TPM ends it (on failure PinIndex flushes it);
- only pin-status and pin-check run while it is held (verbs.answer drops it before any
  other verb: enrolment's own sessions need the TPM's few session slots);
- it lives at most SPARE_SECONDS, and the worker flushes it before it exits, so an idle
  service holds no TPM session (without a resource manager, a session the worker left
  behind would keep one of the TPM's 3 session slots until the TPM restarts).
"""
from __future__ import annotations

from time import monotonic

#: How long a spare may wait for its check: long enough for a user to type a PIN
#: after the prompt, short enough that an idle service holds no session.
SPARE_SECONDS = 30.0


class _Spare:
    __slots__ = ("expires", "name", "session", "tpm")

    def __init__(self, tpm, name: bytes, session) -> None:
        self.tpm, self.name, self.session = tpm, name, session
        self.expires = monotonic() + SPARE_SECONDS


_held: _Spare | None = None


def held() -> bool:
    return _held is not None


def seconds_left() -> float:
    """Until the spare expires (0 when none is held)."""
    return max(0.0, _held.expires - monotonic()) if _held is not None else 0.0


def prepare(tpm, salt_key_name: bytes) -> None:
    """Start a spare session on `tpm` salted with the key recorded as `salt_key_name`
    (a held one is dropped first). Errors propagate: the caller closes `tpm`."""
    from pinutil.tpm import sapi  # the worker's import: the server never loads TPM code

    global _held
    drop()
    _held = _Spare(tpm, salt_key_name, sapi.start_salted_session(tpm, salt_key_name))


def take(tpm, salt_key_name: bytes | None):
    """The spare if it was made on `tpm` with `salt_key_name` and has not expired, else
    a fresh session (sapi.start_salted_session); either way the slot is empty after."""
    global _held
    spare, _held = _held, None
    if (spare is not None and spare.tpm is tpm and spare.name == salt_key_name
            and monotonic() < spare.expires):
        return spare.session
    if spare is not None:
        spare.tpm.flush_quietly(spare.session.handle)
    from pinutil.tpm import sapi

    return sapi.start_salted_session(tpm, salt_key_name)


def drop(tpm=None) -> None:
    """Flush the spare (only if it belongs to `tpm`, when given): before that connection
    closes, before another verb, when it expired, and when the worker leaves."""
    global _held
    spare = _held
    if spare is None or (tpm is not None and spare.tpm is not tpm):
        return
    _held = None
    spare.tpm.flush_quietly(spare.session.handle)
