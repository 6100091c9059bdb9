"""What libpam's dispatcher does with a stack, given what each module returns.

`dispatch` is `_pam_dispatch_aux` (libpam/pam_dispatch.c, Linux-PAM 1.5.2) transcribed
step by step over a handler list: the impression/status pair, substack levels with the
state saved on entry (for `reset`), jumps that count a whole substack as one line,
`done`/`die` ending only the current substack, the final sanity check (a "success"
nobody vouched for becomes PAM_PERM_DENIED), PAM_MUST_FAIL_CODE, out-of-range codes,
the frozen chain of pam_setcred / pam_close_session (they follow the path the last
pam_authenticate / pam_open_session took) and PAM_INCOMPLETE's saved position.

`Transaction` is one PAM handle: `call("auth")`, `call("setcred")`, ... in the order an
application makes them, `call("password")` being pam_chauthtok's two passes
(PAM_PRELIM_CHECK, then PAM_UPDATE_AUTHTOK if the first succeeded).

Not modelled: audit (a kernel audit socket that refuses the record turns any result
into PAM_SYSTEM_ERR), modules that call back into the application, pam_fail_delay.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .codes import (
    ABORT,
    BAD,
    DIE,
    DONE,
    IGNORE,
    IGNORE_CODE,
    INCOMPLETE,
    INVALID_RETVAL,
    MODULE_UNKNOWN,
    MUST_FAIL_CODE,
    OK,
    RESET,
    RETURN_VALUES,
    SUCCESS,
)
from .model import Handler, Kind, Stack

UNDEF_IMPRESSION, POSITIVE, NEGATIVE = 0, 1, -1
PLEASE_FREEZE, MAY_BE_FROZEN = 0, 1

#: stage -> (PAM type, pam_sm_* function, libpam's frozen-chain mode)
STAGES: dict[str, tuple[str, str, int]] = {
    "auth": ("auth", "pam_sm_authenticate", PLEASE_FREEZE),
    "setcred": ("auth", "pam_sm_setcred", MAY_BE_FROZEN),
    "account": ("account", "pam_sm_acct_mgmt", PLEASE_FREEZE),
    "session": ("session", "pam_sm_open_session", PLEASE_FREEZE),
    "close_session": ("session", "pam_sm_close_session", MAY_BE_FROZEN),
    "password": ("password", "pam_sm_chauthtok", PLEASE_FREEZE),
}
#: pam_dispatch.c's source says a jump in a frozen chain (pam_setcred,
#: pam_close_session) also counts as `ok` for the module's own result. Debian 12's
#: compiled libpam.so.0 (1.5.2-6+deb12u3) has no such code (disassembled, and measured:
#: `[default=1]` returning 7 in pam_close_session leaves the result alone), so the jump
#: only jumps there. True gives the behaviour the upstream source describes.
CACHED_JUMP_SETS_STATUS = False

#: which stage froze the chain a frozen stage follows
FREEZER = {"setcred": "auth", "close_session": "session"}

#: (handler, function, pass) -> code the module returns. `pass` is "prelim"/"update" for
#: pam_chauthtok's two passes, "" otherwise.
Results = Callable[[Handler, str, str], int]


@dataclass(frozen=True)
class Step:
    """One line libpam evaluated: what it returned and what libpam did with it."""

    handler: Handler
    returned: int           # what the module returned (or libpam's code for it)
    action: str             # ok, done, bad, die, ignore, reset, jump N, bad jump
    called: bool            # the module's code ran (False: missing module, must-fail)
    pass_: str = ""         # "prelim" / "update" for pam_chauthtok


@dataclass
class Outcome:
    """What one pam_* call returned and the lines it evaluated, in order."""

    stage: str
    code: int
    steps: list[Step] = field(default_factory=list)
    stage_ran: bool = True
    message: str = ""
    undefined: str | None = None    # libpam's own behaviour is undefined here


@dataclass
class _Former:
    """pamh->former: where a PAM_INCOMPLETE call stopped."""

    choice: str | None = None
    depth: int = 0
    impression: int = UNDEF_IMPRESSION
    status: int = MUST_FAIL_CODE
    substates: list[tuple[int, int]] | None = None
    update: bool = False            # pam_chauthtok: the PRELIM pass is done


class Transaction:
    """One PAM handle on a loaded stack."""

    def __init__(self, stack: Stack, results: Results) -> None:
        self.stack = stack
        self.results = results
        self.cached: dict[int, int] = {}         # handler ident -> cached_retval
        self.former = _Former()

    def call(self, stage: str) -> Outcome:
        """pam_authenticate (`auth`), pam_setcred, pam_acct_mgmt (`account`),
        pam_open_session (`session`), pam_close_session or pam_chauthtok (`password`)."""
        if self.stack.failure is not None:
            f = self.stack.failure
            return Outcome(stage, f.code, stage_ran=False, message=f.message)
        if stage != "password":
            return self._dispatch(stage, "")
        # pam_chauthtok: PRELIM_CHECK, and UPDATE_AUTHTOK only after its success.
        if not self.former.update:
            first = self._dispatch("password", "prelim")
            if first.code != SUCCESS:
                return first
        else:
            first = Outcome("password", SUCCESS)
        self.former.update = True
        second = self._dispatch("password", "update")
        if second.code != INCOMPLETE:
            self.former.update = False
        second.steps[:0] = first.steps
        return second

    def _dispatch(self, stage: str, pass_: str) -> Outcome:
        """`_pam_dispatch`: pick the chain, handle resumption, walk it."""
        type_, function, frozen = STAGES[stage]
        chain = self.stack.chain(type_)
        outcome = Outcome(stage, ABORT)
        former = self.former
        resumed = False
        if former.choice is not None:
            if former.choice != stage:
                outcome.message = "application failed to re-exec stack"
                return outcome
            resumed = True
        outcome.code = self._walk(chain, function, frozen, pass_, resumed, outcome)
        former.choice = stage if outcome.code == INCOMPLETE else None
        return outcome

    def _module_result(self, h: Handler, function: str, pass_: str) -> tuple[int, bool]:
        if h.kind == Kind.MUST_FAIL:
            return MUST_FAIL_CODE, False
        if not h.calls(function):
            return MODULE_UNKNOWN, False
        return self.results(h, function, pass_), True

    def _walk(self, chain: list[Handler], function: str, use_cached: int, pass_: str,
              resumed: bool, outcome: Outcome) -> int:
        """`_pam_dispatch_aux`."""
        if not chain:
            outcome.message = "no modules loaded for this service and type"
            return MUST_FAIL_CODE
        former = self.former
        if resumed:
            walk = Walk(impression=former.impression, status=former.status,
                        substates=former.substates or Walk().substates)
            skip_depth = former.depth
            former.impression, former.status, former.depth = UNDEF_IMPRESSION, MUST_FAIL_CODE, 0
            former.substates = None
        else:
            walk, skip_depth = Walk(), 0
        while (h := walk.seek(chain, skip_depth)) is not None:
            retval, called = self._module_result(h, function, pass_)
            if not h.actions:
                outcome.undefined = f"{h.where}: {h.problem}"
                outcome.steps.append(Step(h, retval, "undefined", called, pass_))
                return MUST_FAIL_CODE
            if retval == INCOMPLETE:
                former.impression, former.status = walk.impression, walk.status
                former.depth, former.substates = walk.depth, walk.substates
                outcome.steps.append(Step(h, retval, "incomplete", called, pass_))
                return retval
            if use_cached != PLEASE_FREEZE:
                cached = self.cached.get(h.ident, INVALID_RETVAL)
                if cached == INVALID_RETVAL:
                    cached = retval            # _PAM_MAY_BE_FROZEN: not frozen, use own
            else:
                cached = self.cached[h.ident] = retval
            retval, label = walk.apply(chain, retval, cached, use_cached)
            outcome.steps.append(Step(h, retval, label, called, pass_))
        status = walk.final_status()
        if status != walk.status:
            outcome.message = "no module vouched for success (libpam's sanity check)"
        return status


@dataclass
class Walk:
    """The dispatcher's variables while it walks one chain (`_pam_dispatch_aux`'s
    locals): the position, impression and status, and the state saved on entering each
    substack level. `seek` moves to the next line to call; `apply` acts on its result."""

    i: int = 0
    depth: int = 0
    prev_level: int = 0
    impression: int = UNDEF_IMPRESSION
    status: int = MUST_FAIL_CODE
    substates: list[tuple[int, int]] = field(
        default_factory=lambda: [(UNDEF_IMPRESSION, MUST_FAIL_CODE)] * 16)

    def key(self) -> tuple:
        """Everything the rest of the walk depends on (for memoising explorations)."""
        return (self.i, self.prev_level, self.impression, self.status, tuple(self.substates))

    def copy(self) -> Walk:
        return Walk(self.i, self.depth, self.prev_level, self.impression, self.status,
                    list(self.substates))

    def seek(self, chain: list[Handler], skip_depth: int = 0) -> Handler | None:
        """Advance to the next line libpam would call (saving substack entry states,
        stepping over substack markers); None at the end of the chain."""
        while self.i < len(chain):
            h = chain[self.i]
            if self.depth >= skip_depth:
                if self.prev_level < h.level:
                    self.substates[h.level] = (self.impression, self.status)
                if h.kind != Kind.SUBSTACK:
                    return h
            self.prev_level = h.level
            self.i += 1
            self.depth += 1
        return None

    def apply(self, chain: list[Handler], retval: int, cached: int,
              use_cached: int) -> tuple[int, str]:
        """The current line returned `retval` (`cached`: the frozen chain's code);
        update the state and move past the line. Returns (retval as libpam keeps it,
        the action taken)."""
        h = chain[self.i]
        level = h.level
        n = len(chain)
        if cached < SUCCESS or cached >= RETURN_VALUES:
            retval, action = MUST_FAIL_CODE, BAD
        else:
            action = h.actions[cached]
        label = _label(action)
        decided = False
        if action == RESET:
            self.impression, self.status = self.substates[level]
        elif action in (OK, DONE):
            self._take_as_ok(retval, cached)
            decided = self.impression == POSITIVE and action == DONE
        elif action in (BAD, DIE):
            if self.impression != NEGATIVE:
                self.impression = NEGATIVE
                self.status = MUST_FAIL_CODE if retval == IGNORE_CODE else retval
            decided = action == DIE
        elif action != IGNORE:
            if action > 0:
                if CACHED_JUMP_SETS_STATUS and use_cached:
                    self._take_as_ok(retval, cached)
                # A jump counts a whole substack (its marker and deeper lines) as one.
                while self.i + 1 < n and chain[self.i + 1].level >= level and action > 0:
                    while True:
                        self.i += 1
                        self.depth += 1
                        if not (self.i + 1 < n and chain[self.i + 1].level > level):
                            break
                    action -= 1
            if action:
                self.impression, self.status = NEGATIVE, MUST_FAIL_CODE
                label = "bad jump"
        if decided:                        # done/die: skip the rest of this substack
            while self.i + 1 < n and chain[self.i + 1].level >= level:
                self.i += 1
                self.depth += 1
        self.prev_level = level
        self.i += 1
        self.depth += 1
        return retval, label

    def _take_as_ok(self, retval: int, cached: int) -> None:
        """The `ok` rule: the first positive result, or a later one while all is well,
        becomes the status (never a PAM_IGNORE the frozen chain did not have)."""
        all_well = self.impression == UNDEF_IMPRESSION or (self.impression == POSITIVE
                                                           and self.status == SUCCESS)
        if all_well and (retval != IGNORE_CODE or cached == retval):
            self.impression, self.status = POSITIVE, retval

    def final_status(self) -> int:
        """The sanity check: a success no module vouched for is PAM_PERM_DENIED."""
        if self.status == SUCCESS and self.impression != POSITIVE:
            return MUST_FAIL_CODE
        return self.status


def _label(action: int) -> str:
    names = {OK: "ok", DONE: "done", BAD: "bad", DIE: "die", IGNORE: "ignore", RESET: "reset"}
    if action in names:
        return names[action]
    return f"jump {action}" if action > 0 else "bad jump"


def run(stack: Stack, stages: list[str], results: Results) -> list[Outcome]:
    """Calls `stages` in order on one new handle (as an application would)."""
    transaction = Transaction(stack, results)
    return [transaction.call(stage) for stage in stages]


def simulate_stage(stack: Stack, stage: str, results: Results) -> Outcome:
    """One stage as an application runs it: `setcred` after `auth` and `close_session`
    after `session` on the same handle (their frozen chain is what those calls made,
    with the same results), `password` as pam_chauthtok's two passes. The outcome's
    steps are the stage's own."""
    transaction = Transaction(stack, results)
    freezer = FREEZER.get(stage)
    if freezer is not None:
        first = transaction.call(freezer)
        if first.undefined or not first.stage_ran:
            first.stage = stage
            return first
    return transaction.call(stage)
