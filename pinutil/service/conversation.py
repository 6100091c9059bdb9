"""pinutild's conversations: the prompts a request waits on, off the TPM worker.

Two verbs ask back (docs/pinutild.md): pin-setup (for a caller other than root the
password proof first, run by the proof process on the client's connection, then the
new PIN) and pin-login (its PIN, once the worker has read the status). Each prompt is
a frame the loop writes; the client's answer completes the pending request, which then
goes to the worker like any other (server.py `_read`). While a person types, only
their connection waits: the worker and every other client go on.

A connection waiting for a person holds its place in pinutild for minutes (pin-login:
--pin-prompt-timeout), and with `allow_remote` whoever reaches sshd can be that person,
relayed by a root host: root's connections have no per-uid cap. So these
conversations have a cap of their own, `max_prompts` in all (and `max_prompts_per_uid`
for a caller other than root), well under the global one: a login beyond it is refused
at once, and however many wait at prompts, the rest of the connection cap stays for
the requests that do TPM work (review PL4). A conversation holds its place from its
request to its last answer (or its final reply, or its close): the check of a
pin-login's PIN is TPM work again.

A mixin of server.Server, which holds the state it uses (the selector, the limits, the
running proofs, the connections at a prompt) and the loop's own steps (`_reply`,
`_write`).
"""
from __future__ import annotations

import selectors
from time import monotonic

from pinutil import errors
from pinutil.service import protocol, prover, verbs
from pinutil.service.connection import (
    PROVING,
    READING,
    WRITING,
    Connection,
    Job,
    count_one_less,
    frame,
    unavailable,
)
from pinutil.service.proof import ANSWER_SECONDS, PROOF_SECONDS
from pinutil.users import ROOT_UID

#: The verbs that ask back, and so may wait for a person.
ASKS_BACK = frozenset({verbs.LOGIN, verbs.SETUP})


class Conversations:
    """The prompts of pin-setup and pin-login (see the module docstring)."""

    def _take_prompt_place(self, conn: Connection) -> bool:
        """A place at a prompt for this pin-login or pin-setup; when none is left, the
        request is refused at once with `tpm_unavailable` (its PAM client goes on to the
        password) and False returned. Nothing was sent to the TPM for it."""
        limits, uid = self.limits, conn.account  # a root host's: the uid it acts for
        if len(self.at_prompt) >= limits.max_prompts:
            why = f"pinutild is busy: {limits.max_prompts} logins wait at their prompts"
        elif (uid != ROOT_UID and limits.max_prompts_per_uid
              <= sum(other.account == uid for other in self.at_prompt)):
            why = (f"pinutild is busy: {limits.max_prompts_per_uid} logins of yours wait "
                   "at their prompts")
        else:
            self.at_prompt.add(conn)
            return True
        self._reply(conn, unavailable(why))
        return False

    def _begin_setup(self, conn: Connection, request: dict) -> None:
        """Root enrols anyone: straight to the new PIN. Anyone else proves their account
        password first, in the proof process (prover.py), which talks to the client on
        this connection meanwhile: this loop stops reading it until the verdict."""
        conn.pending = {"verb": verbs.SETUP, "user": request["user"]}
        if conn.caller.is_root:
            self._ask_new_pin(conn)
            return
        uid = conn.caller.uid
        if self.proofs_per_uid.get(uid, 0) >= self.limits.max_proofs_per_uid:
            self._reply(conn, frame(verbs.error_reply(errors.PermissionDenied(
                "a password proof of yours is already running: answer or cancel that "
                "setup first"))))
            return
        try:
            conn.proof = prover.start(self.proof_socket, request["user"], conn.caller.uid,
                                      conn.sock, conn)
        except errors.PinutilError as e:
            self._reply(conn, frame(verbs.error_reply(e)))
            return
        self.proofs_per_uid[uid] = self.proofs_per_uid.get(uid, 0) + 1
        self.selector.unregister(conn.sock)
        self.selector.register(conn.proof.sock, selectors.EVENT_READ, conn.proof)
        conn.state = PROVING
        conn.deadline = monotonic() + PROOF_SECONDS + self.limits.request_seconds

    def _from_proof(self, proof: prover.Proof) -> None:
        conn = proof.owner
        try:
            verdict = proof.read()
        except protocol.ProtocolError as e:
            verdict = {"result": "error", "error": f"the password proof failed ({e})"}
        if verdict is None:
            return
        self._end_proof(conn)
        if verdict.get("result") == "success":
            conn.proven = True  # set here only: from the root prover's own verdict
            self._ask_new_pin(conn)
            return
        self._reply(conn, frame({"result": str(verdict.get("result"))[:40],
                                  "error": str(verdict.get("error", ""))[:300]}))

    def _end_proof(self, conn: Connection) -> None:
        proof, conn.proof = conn.proof, None
        count_one_less(self.proofs_per_uid, conn.caller.uid)
        self.selector.unregister(proof.sock)
        proof.close()
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _ask_new_pin(self, conn: Connection) -> None:
        self._ask(conn, {"verb": verbs.SETUP, "user": conn.pending["user"]},
                  {"prompt": "New PIN: ", "style": "new_pin"})

    def _ask(self, conn: Connection, pending: dict, prompt: dict) -> None:
        """Send the prompt frame; its answer completes `pending` (`_read`)."""
        conn.pending = pending
        conn.state = WRITING
        conn.reply = frame(prompt)
        conn.deadline = monotonic() + self.limits.request_seconds
        self.selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _await_answer(self, conn: Connection) -> None:
        conn.state = READING
        conn.buffer.clear()
        conn.need = protocol.HEADER_SIZE
        # A person typing: a new PIN twice, or the PIN of a login.
        conn.deadline = monotonic() + (ANSWER_SECONDS if conn.pending["verb"] == verbs.SETUP
                                       else self.limits.pin_prompt_seconds)
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _ask_for_pin(self, conn: Connection, job: Job, status: dict) -> None:
        """A pin-login's status allows a PIN: the prompt goes out, and the worker is free
        for others while the user types (the check is a job of its own)."""
        conn.job = None
        self._ask(conn, {"verb": "pin-check", **job.fields},
                  {"prompt": status["prompt"], "style": "echo_off"})
