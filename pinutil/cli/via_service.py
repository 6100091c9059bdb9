"""`pinutil setup|change|delete|status|test` through pinutild, for callers other than
root, whenever the policy's `service_socket` exists (docs/pinutil.md).

Then this process opens no TPM and writes no file: it asks for the PINs (and for
setup answers the password proof's prompts, pinutild(8)), sends them, and prints what
the service answers. The service applies the same rules with the same core functions
(pinutil.pin.lifecycle), checks every PIN against its own policy, runs the password
proof itself and writes the audit line. So `pinutil` needs no set-id bit where the
service runs; without the service the set-gid path (pinutil.cli.app) is the fallback.
The rules of pinutil.users are also checked here first, only so that a refusal
comes before any prompt.

Root keeps the direct path for these commands: root may open the TPM anyway and
records the salt key on its first setup (trust on first use).

Whoever runs as the service's account is believed as the server, but not about what
to ask (review 2, G5): setup answers only the conversation pin-setup has
(`SetupConversation`), the other commands none, and every text of the service's is
shown through pinutil.cli.safe_text, never raw.
"""
from __future__ import annotations

import functools
import os

from pinutil import errors, users
from pinutil.cli.safe_text import safe_text
from pinutil.pin import lifecycle

#: Each wait for the service (not the time a person takes to answer a prompt): the
#: proof may take pam_unix's delay after a wrong password, a change waits for the TPM.
SERVICE_SECONDS = 60.0


def applies(ctx) -> bool:
    """Whether this run goes through pinutild."""
    return not ctx.caller.is_root and os.path.exists(ctx.policy.service_socket)


def _ask(ctx, fields: dict, answer=None) -> dict:
    """The service's successful reply, else its error raised (pinutil.errors)."""
    from pinutil.service import client

    reply = client.converse(ctx.policy.service_socket, fields, answer, SERVICE_SECONDS)
    if reply.get("result") != "success":
        raise errors.from_json(reply)
    return reply


def _status(ctx, user: users.User) -> dict:
    return _ask(ctx, {"verb": "pin-status", "user": user.name})


class SetupConversation:
    """The prompts pin-setup may send, in this order (pinutild(8), THE ENROLMENT
    CONVERSATION): the password proof's messages (pam_unix's password prompt, PAM's
    info and error lines; at most the proof process's MAX_PROMPTS), then the new PIN
    once, then only the reply. Any other prompt (a "Password: " after the new PIN, a
    second new PIN, one message too many) ends the setup before its answer is asked
    for: a service that asks more than the flow needs is phishing (review 2, G5)."""

    def __init__(self, ctx) -> None:
        from pinutil.service.proof import MAX_PROMPTS

        self.ctx, self.proof_messages_left = ctx, MAX_PROMPTS
        self.new_pin_asked = False

    def __call__(self, text: str, style: str) -> bytearray | None:
        if self.new_pin_asked:
            raise _off_script(f"sent a prompt ({style}) after the new PIN")
        if style == "new_pin":
            self.new_pin_asked = True
            return bytearray(self.ctx.new_pin())
        if self.proof_messages_left == 0:
            raise _off_script("sent more messages than the password proof may")
        self.proof_messages_left -= 1
        if style in ("error", "info"):
            self.ctx.prompter.show(text)
            return None
        return self.ctx.prompter.answer(text, echo=style == "echo_on")


def _off_script(what: str) -> errors.TpmUnavailable:
    return errors.TpmUnavailable(
        f"pinutild {what}: setup ended, that prompt not answered (pin-setup asks the "
        "password proof's prompts, then the new PIN once)")


def setup(ctx) -> dict:
    user = ctx.target
    users.may_setup(ctx.caller, user)
    if ctx.prompter.interactive and _status(ctx, user)["enrolled"]:
        raise lifecycle.already_enrolled(ctx.caller, user)
    ctx.audited_by_service = True
    reply = _ask(ctx, {"verb": "pin-setup", "user": user.name}, SetupConversation(ctx))
    fields = {k: reply[k] for k in ("limit", "salt_key", "replaced_half_finished",
                                    "owner_unprotected") if k in reply}
    return lifecycle.setup_result(user.name, fields)


def change(ctx) -> dict:
    user = ctx.target
    users.may_change(ctx.caller, user)
    old = ctx.pin("Current PIN: ")
    new = ctx.new_pin()
    ctx.audited_by_service = True
    reply = _ask(ctx, {"verb": "pin-change", "user": user.name, "old_pin": old, "pin": new})
    return {"limit": reply.get("limit"), "message": f"PIN changed for {user.name}"}


def delete(ctx) -> dict:
    user = ctx.target
    users.may_delete(ctx.caller, user)
    fields = {"verb": "pin-delete", "user": user.name}
    if _status(ctx, user)["enrolled"]:  # a half-finished index goes without a PIN
        fields["pin"] = ctx.pin()
    ctx.audited_by_service = True
    what = _ask(ctx, fields).get("what", "PIN")
    return {"message": f"{what} deleted for {user.name}"}


def status(ctx) -> dict:
    user = ctx.target
    users.may_status(ctx.caller, user)
    reply = _status(ctx, user)
    fields = {k: reply.get(k) for k in ("enrolled", "failures", "limit", "locked",
                                        "attempts_left")}
    if not reply.get("enrolled"):
        return {**fields, "message": f"{user.name}: no PIN enrolled"}
    fields["record"] = reply.get("record")
    record_text = ""
    if reply.get("record") != "ok":
        fields["record_problem"] = str(reply.get("record_problem", ""))
        record_text = f"; no PIN login: {fields['record_problem']}"
    if reply.get("locked"):
        message = (f"{user.name}: PIN locked ({reply.get('failures')} of {reply.get('limit')} "
                   "attempts failed)")
    else:
        message = (f"{user.name}: PIN enrolled, {reply.get('failures')} of "
                   f"{reply.get('limit')} attempts failed, {reply.get('attempts_left')} "
                   "attempts left")
    return {**fields, "message": message + record_text}


def test(ctx) -> dict:
    user = ctx.target
    users.may_test(ctx.caller, user)
    pin = ctx.pin()
    _ask(ctx, {"verb": "pin-check", "user": user.name, "pin": pin})
    try:
        left = _status(ctx, user).get("attempts_left")
    except errors.PinutilError:
        left = None  # the check succeeded; the count is only informative
    return {"attempts_left": left, "message": f"PIN correct for {user.name}"}


def _safe_message(command):
    """`command` with its message made safe to print: it quotes the service's fields
    (a record problem, a count), which may hold any text."""
    @functools.wraps(command)
    def run(ctx) -> dict:
        fields = command(ctx)
        fields["message"] = safe_text(fields["message"])
        return fields
    return run


#: pinutil's command -> its path through the service. Only setup answers prompts:
#: the others call the service without an `answer`, so any prompt frame in their
#: conversation is refused (pinutil.service.client.converse) and nothing is sent.
COMMANDS = {name: _safe_message(command) for name, command in (
    ("setup", setup), ("change", change), ("delete", delete), ("status", status),
    ("test", test))}
