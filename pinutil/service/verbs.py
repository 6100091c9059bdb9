"""What pinutild does for each verb, with pinutil's core (never TPM logic of its own).

A verb is a function `(ctx, caller, fields) -> dict` run by the service's TPM worker
process (worker.py), one request at a time. It applies the rules of pinutil.users to the caller from peer.py before any
TPM command, and raises the core's domain errors; `answer` turns the outcome into the
reply fields, with the result tokens `pinutil --json` uses (so the PAM side reads both
with one mapping, pinutil.login).

    pin-status  user            -> enrolled, failures, limit, locked, attempts_left,
                                   record ("ok" | "mismatch"), record_problem
    pin-check   user, pin       -> success, or wrong_pin (+ attempts_left), locked, ...
    master-key-token  user      -> token (64 hex digits); root callers only
    master-key-status, -load, -clear: the key's administration, root callers only
                                   (master_key_verbs.py)
"""
from __future__ import annotations

import contextlib
import sys
import traceback

from pinutil import errors, users
from pinutil.pin import enrolment
from pinutil.pin.policy import Policy, load_policy
from pinutil.service import master_key_verbs, spare_session
from pinutil.users import User


class BadRequest(Exception):
    """A well-framed request that names no verb we know, or lacks a field."""


class Context:
    """What every verb needs: the service's policy (re-read per request, so an edit
    takes effect without a restart) and the path of its salt key record."""

    __slots__ = ("policy", "policy_path")

    def __init__(self, policy_path: str) -> None:
        self.policy_path = policy_path
        self.policy: Policy = load_policy(policy_path)

    def handle(self, user: User) -> int:
        from pinutil.pin.index import PinIndex

        return PinIndex.handle_for(user.uid, self.policy.nv_base)

    def pin_index(self, tpm, user: User):
        from pinutil.pin import salt_key
        from pinutil.pin.index import PinIndex

        path = salt_key.record_path(self.policy_path)
        return PinIndex(tpm, self.handle(user), lambda: salt_key.load(path),
                        start_session=spare_session.take)

    def open_tpm(self):
        """The worker's TPM connection for this request (see `kept_tpm`)."""
        return kept_tpm(self.policy.tcti)


#: The worker's one kept TPM connection: tcti -> Tpm (worker.py runs one request at a
#: time, so no lock).
_KEPT: dict = {}


@contextlib.contextmanager
def kept_tpm(tcti: str):
    """A TPM connection that outlives the request when the request went well: opening
    one (tctildr, ESYS) was the largest cost of a request after the TPM's own work.
    Any error closes it, so what an error path may have left loaded in the TPM goes
    with it (the resource manager flushes a closed connection's objects), and the next
    request starts from a fresh connection, as every request did before."""
    from pinutil.tpm.context import Tpm

    tpm = _KEPT.pop(tcti, None)
    _close_kept()  # the policy's tcti changed: the old one goes
    if tpm is None:
        tpm = Tpm(tcti)
    try:
        yield tpm
    except BaseException:
        _close(tpm)
        raise
    _KEPT[tcti] = tpm


def _close(tpm) -> None:
    spare_session.drop(tpm)  # flushed first: no session outlives its connection
    tpm.close()


def _close_kept() -> None:
    """Close the kept connection and its spare session (the worker is leaving, or its
    state is unknown after an error)."""
    for tpm in _KEPT.values():
        _close(tpm)
    _KEPT.clear()


def prepare_spare(policy_path: str) -> None:
    """The worker is idle: start the spare salted session (spare_session.py) on the kept
    connection, if there is one and the policy salts. Never raises: an error closes
    that connection (the next request starts afresh and meets the error itself)."""
    try:
        policy = load_policy(policy_path)
        tpm = _KEPT.get(policy.tcti)
        if tpm is None or not policy.salted or spare_session.held():
            return
        from pinutil.pin import salt_key

        spare_session.prepare(tpm, salt_key.load(salt_key.record_path(policy_path)))
    except Exception:  # noqa: BLE001 - the next request reports what is wrong
        _close_kept()


def expire_spare() -> None:
    spare_session.drop()


def leave() -> None:
    """The worker is leaving: flush the spare, close the kept connection."""
    _close_kept()


def _target(fields: dict) -> User:
    return users.lookup_user(fields["user"])


def pin_status(ctx: Context, caller: User, fields: dict) -> dict:
    user = _target(fields)
    users.may_status(caller, user)
    with ctx.open_tpm() as tpm:
        st = ctx.pin_index(tpm, user).status()
    if not st.enrolled:
        return {"enrolled": False, "locked": False, "failures": None, "limit": None,
                "attempts_left": None}
    reply = {"enrolled": True, "failures": st.failures, "limit": st.limit,
             "locked": bool(st.locked), "attempts_left": st.attempts_left}
    try:
        enrolment.verify(ctx.policy.enrolment_dir, user.name, user.uid, ctx.handle(user))
        reply["record"] = "ok"
    except errors.EnrolmentMismatch as e:
        reply.update(record="mismatch", record_problem=_one_line(str(e)))
    return reply


def pin_check(ctx: Context, caller: User, fields: dict) -> dict:
    user = _target(fields)
    users.may_test(caller, user)  # before any TPM command: no lock-out of others
    try:
        text = fields["pin"].decode("ascii")
    except UnicodeDecodeError:
        raise errors.InvalidPin("the PIN is not ASCII") from None
    pin = ctx.policy.check_pin(text)  # the service's policy, whatever the client checked
    with ctx.open_tpm() as tpm:
        index = ctx.pin_index(tpm, user)
        try:  # no PIN goes to an index not recorded as theirs (a file: no TPM command)
            enrolment.verify(ctx.policy.enrolment_dir, user.name, user.uid, ctx.handle(user))
        except errors.EnrolmentMismatch:
            if not index.status().enrolled:  # the common case: say "no PIN", as pinutil
                raise errors.NotEnrolled(f"{user.name} has no PIN enrolled") from None
            raise
        index.check(pin, salted=ctx.policy.salted)  # verifies the index before the PIN
    return {}


def tpm_probe(ctx: Context, caller: User, fields: dict) -> dict:
    """Not a client verb: the server's breaker asks whether the TPM answers again (one
    GetCapability, no PIN, no index)."""
    from pinutil.tpm._tss import lib

    with ctx.open_tpm() as tpm:
        tpm.get_command_supported(lib.TPM2_CC_NV_Read)
    return {}


#: verb -> (function, required fields and their types). No other field is accepted.
VERBS = {
    "pin-status": (pin_status, {"user": str}),
    "pin-check": (pin_check, {"user": str, "pin": bytes}),
    "master-key-token": (master_key_verbs.token, {"user": str}),
    "master-key-status": (master_key_verbs.status, {}),
    "master-key-load": (master_key_verbs.load, {"secret": bytes, "replace": bool}),
    "master-key-clear": (master_key_verbs.clear, {}),
}


#: The verbs that run while a spare session is held (spare_session.py): they start no
#: session of their own. Any other verb finds the TPM's session slots as before.
_SPARE_MAY_STAY = (pin_status, pin_check)


def parse_request(fields: dict):
    """(function, fields) of a decoded request; BadRequest if it is not one we serve."""
    verb = fields.get("verb")
    if verb not in VERBS:
        raise BadRequest("unknown verb")
    function, schema = VERBS[verb]
    given = set(fields) - {"verb"}
    if given != set(schema):
        raise BadRequest(f"{verb} takes exactly the fields {', '.join(sorted(schema))}")
    for name, kind in schema.items():
        if type(fields[name]) is not kind:
            raise BadRequest(f"{verb}: field {name} has the wrong type")
    return function, fields


def _one_line(text: str) -> str:
    return errors.one_line(text)[:300]


def answer(function, policy_path: str, caller: User, fields: dict) -> dict:
    """Run one verb; its reply fields. Never raises: a bug is `error` (and its traceback
    goes to stderr, the journal), never success."""
    try:
        if function not in _SPARE_MAY_STAY:
            spare_session.drop()
        reply = function(Context(policy_path), caller, fields)
        return {"result": "success", **reply}
    except errors.PinutilError as e:  # the error's own token and fields (errors.py)
        reply = e.json_fields()
        reply["error"] = _one_line(reply["error"])
        return reply
    except Exception as e:  # noqa: BLE001 - a bug: reported, never success
        traceback.print_exc(file=sys.stderr)
        return {"result": "error", "error": f"internal error ({type(e).__name__})"}
