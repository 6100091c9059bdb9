"""What pinutild does for each verb, with pinutil's core (never TPM logic of its own).

A verb is a function `(ctx, caller, fields) -> dict` run by the service's TPM worker
process (worker.py), one request at a time. It applies the rules of pinutil.users to the caller from peer.py before any
TPM command, and raises the core's domain errors; `answer` turns the outcome into the
reply fields, with the result tokens `pinutil --json` uses (so the PAM side reads both
with one mapping, pinutil.login).

    pin-status  user [on_behalf_of]  -> enrolled, failures, limit, locked, attempts_left,
                                   record ("ok" | "mismatch"), record_problem
    pin-check   user, pin [on_behalf_of]  -> success, or wrong_pin (+ attempts_left), ...
    pin-login   user [on_behalf_of]  -> a PAM host's whole PIN login on one connection:
                                   this verb reads the status (refusals end it here,
                                   before any prompt); server.py then sends the PIN
                                   prompt and runs pin-check with the answer

`on_behalf_of` (a uid): the client acts for that uid, and the rules apply to it
instead (users.acting_for): root narrows itself (tpm_pin in polkit's socket-activated
agent helper names the agent's uid); anyone else may name only themselves.
    master-key-token  user      -> token (64 hex digits); root callers only
    master-key-status, -load, -clear: the key's administration, root callers only
                                   (master_key_verbs.py)
    pin-setup   user            -> limit, salt_key, owner_unprotected; after the
                                   conversation (server.py):
                                   the password proof unless root, then the new PIN
    pin-change  user, pin [old_pin]  -> limit; old_pin needed unless root
    pin-delete  user [pin]      -> what ("PIN" or "half-finished PIN index"); pin
                                   needed unless root (none for a half-finished index)

Setup, change and delete are logged like `pinutil` logs them (pinutil.audit), and do
what `pinutil` does through the same core functions (pinutil.pin.lifecycle).
"""
from __future__ import annotations

import contextlib
import sys
import traceback

from pinutil import audit, errors, users
from pinutil.pin import lifecycle
from pinutil.pin.policy import Policy, load_policy
from pinutil.pin.prompt import prompt_text
from pinutil.service import master_key_verbs, spare_session
from pinutil.users import User


class BadRequest(Exception):
    """A well-framed request that names no verb we know, or lacks a field."""


class Context:
    """What every verb needs: the service's policy (re-read per request, so an edit
    takes effect without a restart) and the path of its salt key record."""

    __slots__ = ("lookups", "policy", "policy_path")

    def __init__(self, policy_path: str) -> None:
        self.policy_path = policy_path
        self.policy: Policy = load_policy(policy_path)
        self.lookups: dict = {}  # uid -> slots.Lookup: one record read per request

    def _lookup(self, user: User):
        from pinutil.pin import slots

        return slots.lookup(self.lookups, self.policy, user.name, user.uid)

    def handle(self, user: User) -> int:
        """The handle the user's PIN is at: the one their record names (pin/slots.py)."""
        return self._lookup(user).handle

    def verify(self, user: User):
        """The enrolment record if it names the user and that handle, else
        EnrolmentMismatch (enrolment.verify, on the same read as `handle`)."""
        return self._lookup(user).verified()

    def pin_index(self, tpm, user: User):
        from pinutil.pin import salt_key
        from pinutil.pin.index import PinIndex

        path = self.policy.salt_key_record
        return PinIndex(tpm, self.handle(user), lambda: salt_key.load(path),
                        start_session=spare_session.take)

    def open_tpm(self):
        """The worker's TPM connection for this request (see `kept_tpm`), its owner
        password read from the policy's owner_auth_file, afresh for each request, at
        its first owner-hierarchy command (pinutil/owner_auth.py)."""
        from pinutil import owner_auth

        return kept_tpm(self.policy.tcti, owner_auth.loader(self.policy.owner_auth_file))


#: The worker's one kept TPM connection: tcti -> Tpm (worker.py runs one request at a
#: time, so no lock).
_KEPT: dict = {}


@contextlib.contextmanager
def kept_tpm(tcti: str, owner_auth=b""):
    """A TPM connection that outlives the request when the request went well: opening
    one (tctildr, ESYS) was the largest cost of a request after the TPM's own work.
    Any error closes it, so what an error path may have left loaded in the TPM goes
    with it (the resource manager flushes a closed connection's objects), and the next
    request starts from a fresh connection, as every request did before."""
    from pinutil.tpm.context import Tpm

    tpm = _KEPT.pop(tcti, None)
    _close_kept()  # the policy's tcti changed: the old one goes
    if tpm is None:
        tpm = Tpm(tcti, owner_auth=owner_auth)
    else:
        tpm.use_owner_auth(owner_auth)
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

        spare_session.prepare(tpm, salt_key.load(policy.salt_key_record))
    except Exception:  # noqa: BLE001 - the next request reports what is wrong
        _close_kept()


def expire_spare() -> None:
    spare_session.drop()


def leave() -> None:
    """The worker is leaving: flush the spare, close the kept connection."""
    _close_kept()


def _target(caller: User, fields: dict, exact: bool = False) -> User:
    """The account `fields["user"]` names. A caller other than root may name only its
    own account (pinutil.users), so for it that account comes from its uid and the
    name is merely compared with it: a name it may not use is never looked up (a slow
    directory would hold the TPM worker for it and trip the breaker for everyone).
    `exact` (a PAM host's login): the name must be the account's own name, never a uid
    written out, so that PAM_USER "0" is no way into root's PIN."""
    name = fields["user"]
    if caller.is_root:
        return users.account_named(name) if exact else users.lookup_user(name)
    own = users.user_by_uid(caller.uid) if caller.uid >= 0 else None  # -1: no account
    if own is None or name not in ((own.name,) if exact else (own.name, str(own.uid))):
        raise errors.PermissionDenied(f"only root may use another user's PIN "
                                      f"({name[:64]!r})")
    return own


def _caller(caller: User, fields: dict) -> User:
    """Whom the rules apply to: the peer, or the uid it says it acts for."""
    if "on_behalf_of" not in fields:
        return caller
    return users.acting_for(caller, fields["on_behalf_of"])


def pin_status(ctx: Context, caller: User, fields: dict) -> dict:
    acting = _caller(caller, fields)
    user = _target(acting, fields)
    users.may_status(acting, user)
    with ctx.open_tpm() as tpm:
        st = ctx.pin_index(tpm, user).status()
    if not st.enrolled:
        return {"enrolled": False, "locked": False, "failures": None, "limit": None,
                "attempts_left": None}
    reply = {"enrolled": True, "failures": st.failures, "limit": st.limit,
             "locked": bool(st.locked), "attempts_left": st.attempts_left}
    try:
        ctx.verify(user)
        reply["record"] = "ok"
    except errors.EnrolmentMismatch as e:
        reply.update(record="mismatch", record_problem=_one_line(str(e)))
    return reply


def pin_login(ctx: Context, caller: User, fields: dict) -> dict:
    """pin-login's first half: whether a PIN may be asked for at all, and the prompt.
    Everything that ends a login without a PIN ends it here, before the prompt (so a
    refused caller learns nothing of the attempts left): another user's PIN (the rule
    of pin-check, so a root host acting for a uid is refused `pin_not_offered`, as
    tpm_pin refuses it for the local backends), no PIN, an index not recorded as
    theirs, a locked PIN."""
    acting = _caller(caller, fields)
    try:
        user = _target(acting, fields, exact=True)
        users.may_test(acting, user)
    except errors.PermissionDenied:
        if "on_behalf_of" not in fields:
            raise
        raise errors.PinNotOffered(f"this root host acts for uid {acting.uid}, not for "
                                   f"{fields['user'][:64]!r}: no PIN offered") from None
    with ctx.open_tpm() as tpm:
        st = ctx.pin_index(tpm, user).status()
    if not st.enrolled:
        raise errors.NotEnrolled("no PIN enrolled")
    ctx.verify(user)  # the record read once, with the handle (pin/slots.py)
    if st.locked:
        raise errors.PinLocked("the PIN is locked: too many wrong PINs")
    return {"prompt": prompt_text(st.failures, st.attempts_left)}


def _checked_pin(ctx: Context, raw: bytes) -> bytes:
    """A PIN the service's own policy accepts, whatever the client checked."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.InvalidPin("the PIN is not ASCII") from None
    return ctx.policy.check_pin(text)


def _account(uid: int) -> User | None:
    try:
        return users.user_by_uid(uid)
    except errors.UnknownUser:
        return None


def _audited(command: str, failures_only: bool = False):
    """Log every outcome of the verb like `pinutil COMMAND` does (pinutil.audit); with
    `failures_only`, every outcome but success."""
    def wrap(function):
        def run(ctx: Context, caller: User, fields: dict) -> dict:
            result = "error"
            try:
                reply = function(ctx, caller, fields)
                result = "success"
                return reply
            except errors.PinutilError as e:
                result = e.token
                raise
            finally:
                if not (failures_only and result == "success"):
                    try:
                        target = _target(caller, fields)
                    except errors.PinutilError:
                        target = None
                    audit.log(command, _account(caller.uid), target, fields["user"],
                              result, caller.uid)
        return run
    return wrap


# Every PIN that is not accepted (pin-check, and the check of a pin-login's answer) is
# one LOG_AUTHPRIV line with the caller and the account, never the PIN: the service is
# the one place that sees code running as a user guess its PIN without a PAM host.
@_audited("check", failures_only=True)
def pin_check(ctx: Context, caller: User, fields: dict) -> dict:
    acting = _caller(caller, fields)
    user = _target(acting, fields)
    users.may_test(acting, user)  # before any TPM command: no lock-out of others
    pin = _checked_pin(ctx, fields["pin"])
    with ctx.open_tpm() as tpm:
        index = ctx.pin_index(tpm, user)
        try:  # no PIN goes to an index not recorded as theirs (a file: no TPM command)
            ctx.verify(user)
        except errors.EnrolmentMismatch:
            if not index.status().enrolled:  # the common case: say "no PIN", as pinutil
                raise errors.NotEnrolled(f"{user.name} has no PIN enrolled") from None
            raise
        index.check(pin, salted=ctx.policy.salted)  # verifies the index before the PIN
    return {}


#: The field server.py adds to a setup request once the proof process said "success"
#: (never a client's: no request may name it, `parse_request`).
PROVEN = "password_proven"
SETUP = "pin-setup"
LOGIN = "pin-login"


@_audited("setup")
def pin_setup(ctx: Context, caller: User, fields: dict) -> dict:
    user = _target(caller, fields)
    users.may_setup(caller, user)
    if users.setup_needs_password(caller) and fields.get(PROVEN) is not True:
        raise errors.PermissionDenied("enrolling your own PIN needs your account password")
    pin = _checked_pin(ctx, fields["pin"])
    lifecycle.check_writable(ctx.policy)
    with ctx.open_tpm() as tpm:
        return lifecycle.setup(ctx.pin_index(tpm, user), ctx.policy, caller, user, pin)


@_audited("change")
def pin_change(ctx: Context, caller: User, fields: dict) -> dict:
    user = _target(caller, fields)
    users.may_change(caller, user)  # before any TPM command
    old = _checked_pin(ctx, fields["old_pin"]) if "old_pin" in fields else None
    new = _checked_pin(ctx, fields["pin"])
    with ctx.open_tpm() as tpm:
        return lifecycle.change(ctx.pin_index(tpm, user), ctx.policy, caller, user, old, new)


@_audited("delete")
def pin_delete(ctx: Context, caller: User, fields: dict) -> dict:
    user = _target(caller, fields)
    users.may_delete(caller, user)  # before any TPM command
    pin = _checked_pin(ctx, fields["pin"]) if "pin" in fields else None
    with ctx.open_tpm() as tpm:
        return lifecycle.delete(ctx.pin_index(tpm, user), ctx.policy, caller, user, pin)


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
    LOGIN: (pin_login, {"user": str}),
    "master-key-token": (master_key_verbs.token, {"user": str}),
    "master-key-status": (master_key_verbs.status, {}),
    "master-key-load": (master_key_verbs.load, {"secret": bytes, "replace": bool}),
    "master-key-clear": (master_key_verbs.clear, {}),
    SETUP: (pin_setup, {"user": str}),
    "pin-change": (pin_change, {"user": str, "pin": bytes}),
    "pin-delete": (pin_delete, {"user": str}),
}
#: The verbs that send a PIN of the user to the TPM: a wrong one counts towards the
#: per-user delay (server.py, throttle.py) whichever of them tried it.
TRIES_A_PIN = frozenset({"pin-check", "pin-change", "pin-delete"})
#: The verbs refused with `throttled` while the user's delay runs (server.py): those
#: that try a PIN, and pin-login before its prompt (no PIN asked for in vain).
THROTTLED = TRIES_A_PIN | {LOGIN}
#: verb -> fields it may have besides the required ones.
OPTIONAL = {
    "pin-status": {"on_behalf_of": int},
    "pin-check": {"on_behalf_of": int},
    LOGIN: {"on_behalf_of": int},
    "pin-change": {"old_pin": bytes},
    "pin-delete": {"pin": bytes},
}


#: The verbs that run while a spare session is held (spare_session.py): they start no
#: session of their own. Any other verb finds the TPM's session slots as before.
_SPARE_MAY_STAY = (pin_status, pin_check, pin_login)


def parse_request(fields: dict):
    """(function, fields) of a decoded request; BadRequest if it is not one we serve."""
    verb = fields.get("verb")
    if verb not in VERBS:
        raise BadRequest("unknown verb")
    function, schema = VERBS[verb][:2]
    optional = OPTIONAL.get(verb, {})
    given = set(fields) - {"verb"}
    if not set(schema) <= given <= set(schema) | set(optional):
        raise BadRequest(f"{verb} takes exactly the fields {', '.join(sorted(schema))}"
                         + (f" (and may take {', '.join(sorted(optional))})" if optional else ""))
    for name, kind in {**schema, **optional}.items():
        if name in fields and type(fields[name]) is not kind:
            raise BadRequest(f"{verb}: field {name} has the wrong type")
    return function, fields


def with_answer(pending: dict, answer: dict, proven: bool) -> dict:
    """The request to run once the client answered the service's prompt (a frame
    holding exactly {answer: bytes}): the one `pending` since the prompt, with the
    answer as its PIN; for pin-setup also the proof's outcome, which only server.py
    knows."""
    if set(answer) != {"answer"} or type(answer["answer"]) is not bytes:
        raise BadRequest("the PIN comes as a frame holding exactly one field, answer")
    request = {**pending, "pin": answer["answer"]}
    if pending["verb"] == SETUP:
        request[PROVEN] = proven
    return request


def error_reply(error: errors.PinutilError) -> dict:
    """The reply fields of a domain error (its token and one line)."""
    reply = error.json_fields()
    reply["error"] = _one_line(reply["error"])
    return reply


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
        return error_reply(e)
    except Exception as e:  # noqa: BLE001 - a bug: reported, never success
        traceback.print_exc(file=sys.stderr)
        return {"result": "error", "error": f"internal error ({type(e).__name__})"}
