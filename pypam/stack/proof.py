"""The simulator's proof that an edit which adds the PIN to a service is safe.

`prove(before, after, ...)` runs both stacks through libpam's dispatcher (simulate.py)
under every combination of what the deciding lines can return (credential and
condition modules: succeeds, fails, is unavailable, is ignored, and every other code
their control treats differently; the PIN line: every return code), branching only on
the lines a run actually reaches. Every other module is assumed to succeed, as in
`pypam stack explain` (but see rule 3 for the lines a PIN skips). Lines are matched
between the two stacks by file, type, module, arguments and occurrence (not by line
number or control, which the edit moves and re-counts). It reports a violation of any
of these rules:

1. no new way in: whatever the PIN line returns other than success, `after` succeeds
   only where `before` succeeded;
2. with the PIN unavailable (PAM_AUTHINFO_UNAVAIL: no TPM, no PIN enrolled, a remote
   login; PAM_USER_UNKNOWN; PAM_IGNORE), `after` calls the same modules in the same
   order with the same results (so the same prompts) and ends with the same codes,
   for pam_authenticate and the pam_setcred after it;
3. the PIN replaces the password and nothing else: with a correct PIN, `after`
   succeeds exactly where `before` succeeds with a correct password (so a PIN skips
   no second factor, lockout or condition check, and a correct PIN alone gets in).
   "Assumed to succeed" hides a check the PIN skips, so here a module the engine does
   not know counts as a check: wherever a correct password and a correct PIN both get
   in, each such line the password's run passes through is tried failing (every code
   its control treats differently); where that refuses the password's login it must
   refuse the PIN's too, else the edit is refused ("skips a check", naming the line),
   unless the module is in knowledge.CHECKS_NOTHING (`_unknown_checks`);
4. `master_key` (the keyring's token) runs only in pam_authenticate calls that
   succeed (also when such an unknown line fails, after a PIN or a password);
5. with `master_key` in the stack (`--master-key`): wherever a correct password gets
   in and a keyring line (pam_gnome_keyring, pam_kwallet5) runs, a correct PIN gets in
   and a keyring line runs after master_key too (else the keyring stays locked after
   a PIN login).

Lines the edit added besides the PIN and master_key (`added`: copies of the service's
lines for the PIN's path, the pam_permit/pam_deny that end it) are keyed by their
place, so that the occurrence count of the original lines stays as before, and are
left out of the traces of rule 2 (with no PIN they are jumped over).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .codes import IGNORE_CODE, INCOMPLETE, RETURN_VALUES, SUCCESS, code_name
from .explain import classes_for, display_name
from .knowledge import CHECKS_NOTHING, decides, fixed_result, short_name
from .model import Handler, Stack
from .presets import KEYRING_MODULES
from .simulate import Outcome, Transaction

AUTHINFO_UNAVAIL, USER_UNKNOWN = 9, 10
#: What the PIN line returns when it has no PIN to check.
UNAVAILABLE = (AUTHINFO_UNAVAIL, USER_UNKNOWN, IGNORE_CODE)
#: Every code the PIN line is tried with (PAM_INCOMPLETE would need a re-entry).
PIN_CODES = tuple(c for c in range(RETURN_VALUES) if c != INCOMPLETE)
#: pam_sm_setcred's result: tpm_pin's is PAM_SUCCESS, master_key's PAM_IGNORE.
SETCRED = {"tpm_pin": SUCCESS, "master_key": IGNORE_CODE}
MAX_CASES = 20000
Key = tuple


def line_key(stack: Stack, h: Handler, seen: dict[Key, int]) -> Key:
    # `try_first_pass` is left out: pam-auth-update adds it to pam_unix after our line,
    # and tpm_pin never sets PAM_AUTHTOK, so pam_unix prompts exactly as before.
    args = tuple(a for a in h.args if a != "try_first_pass")
    base = (h.file, h.type, h.kind, h.module, args, h.level)
    n = seen.get(base, 0)
    seen[base] = n + 1
    return (*base, n)


def keys_of(stack: Stack, added: frozenset[tuple[str, int]] = frozenset()) -> dict[int, Key]:
    """handler ident -> a key that survives line numbers and controls changing. Lines
    at an `added` (file, line) are keyed by that place instead (not counted as an
    occurrence of an original line)."""
    seen: dict[Key, int] = {}
    out = {}
    for h in stack.chain("auth"):
        if (h.file, h.line) in added:
            out[h.ident] = (h.file, h.type, h.kind, h.module, h.args, h.level, "added", h.line)
        else:
            out[h.ident] = line_key(stack, h, seen)
    return out


class _Need(Exception):
    """A run reached a deciding line that the case does not assign yet."""

    def __init__(self, key: Key, codes: list[int]) -> None:
        super().__init__(key)
        self.key = key
        self.codes = codes


@dataclass
class Violation:
    rule: str
    message: str
    examples: list[str] = field(default_factory=list)


@dataclass
class Proof:
    cases: int = 0
    violations: list[Violation] = field(default_factory=list)
    #: auth lines that run after a correct password but not after a correct PIN (a
    #: `sufficient` PIN ends the stack), when every other line succeeds
    skipped_after_pin: list[str] = field(default_factory=list)
    #: rule 5 was checked and a keyring line runs after a correct PIN (--master-key)
    keyring_after_pin: bool = False

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, rule: str, message: str, example: str) -> None:
        for v in self.violations:
            if v.rule == rule and v.message == message:
                if len(v.examples) < 3 and example not in v.examples:
                    v.examples.append(example)
                return
        self.violations.append(Violation(rule, message, [example]))


class _Runner:
    """Runs one stack (`pam_authenticate` then `pam_setcred` on one handle) for a case."""

    def __init__(self, stack: Stack, pin_keys: set[Key], ours: set[Key],
                 added: frozenset[tuple[str, int]] = frozenset(),
                 extra: frozenset[str] = frozenset()) -> None:
        self.stack = stack
        self.keys = keys_of(stack, added)
        self.pin_keys = pin_keys
        self.ours = ours            # lines the edit added (left out of traces)
        self.extra = extra          # more credential modules (--credential-module)

    def run(self, case: dict[Key, int], pin: int | None,
            forced: frozenset[Key] = frozenset()) -> tuple[Outcome, Outcome]:
        def results(h: Handler, function: str, pass_: str) -> int:
            key = self.keys[h.ident]
            if function != "pam_sm_authenticate":
                return SETCRED.get(short_name(h), SUCCESS)
            if key in self.pin_keys:
                if pin is None:
                    raise AssertionError("the PIN line in a stack without one")
                return pin
            if key in forced:
                return SUCCESS
            if key in case:     # a deciding line, or a skipped line tried failing
                return case[key]
            if short_name(h) == "master_key":
                return IGNORE_CODE              # always (it only replaces PAM_AUTHTOK)
            fixed = fixed_result(h, function)
            if fixed is not None:
                return fixed
            if not decides(h, self.extra):
                return SUCCESS
            raise _Need(key, [codes[0] for _, codes in classes_for(h, function, self.extra)])
        transaction = Transaction(self.stack, results)
        return transaction.call("auth"), transaction.call("setcred")


def _trace(runner: _Runner, outcome: Outcome) -> list[tuple]:
    return [(runner.keys[s.handler.ident], s.returned) for s in outcome.steps
            if runner.keys[s.handler.ident] not in runner.ours]


def _keyring_ran(outcome: Outcome, after_master_key: bool) -> bool:
    """A keyring line ran (after a master_key line, if `after_master_key`)."""
    token = not after_master_key
    for s in outcome.steps:
        if short_name(s.handler) == "master_key":
            token = True
        elif s.handler.name in KEYRING_MODULES and token:
            return True
    return False


def prove(before: Stack, after: Stack, pin_keys: set[Key], password_keys: set[Key],
          master_keys: set[Key] = frozenset(),
          added: frozenset[tuple[str, int]] = frozenset(),
          extra: frozenset[str] = frozenset()) -> Proof:
    """Check the five rules (module docstring) over every case; see `Proof`. `extra`:
    more modules that check a credential (branched over like pam_unix)."""
    proof = Proof()
    b = _Runner(before, set(), set(), extra=extra)
    a = _Runner(after, pin_keys, set(pin_keys) | set(master_keys), added, extra)
    a.ours |= {key for key in a.keys.values() if key[6] == "added"}
    names = {key: display_name(h) for stack, keys in ((before, b.keys), (after, a.keys))
             for h in stack.chain("auth") for ident, key in keys.items() if h.ident == ident}
    forced = frozenset(password_keys)
    todo: list[dict[Key, int]] = [{}]
    while todo:
        case = todo.pop()
        if proof.cases >= MAX_CASES:
            proof.add("size", f"more than {MAX_CASES} cases: too many deciding lines to "
                      "prove the edit safe", "")
            break
        try:
            _check_case(proof, case, b, a, forced, master_keys, names)
        except _Need as need:
            todo.extend({**case, need.key: code} for code in reversed(need.codes))
            continue
        proof.cases += 1
    return proof


def _words(case: dict[Key, int], names: dict[Key, str]) -> str:
    parts = [f"{names.get(k, k[3])} returns {code_name(c)}" for k, c in case.items()]
    return ", ".join(parts) if parts else "every other line succeeds"


def _check_case(proof: Proof, case: dict[Key, int], b: _Runner, a: _Runner,
                forced: frozenset[Key], master_keys: set[Key],
                names: dict[Key, str]) -> None:
    # Every run first, so that a missing assignment branches before anything is judged.
    before = b.run(case, None)
    with_password = b.run(case, None, forced)
    runs = {pin: a.run(case, pin) for pin in PIN_CODES}
    if before[0].undefined or any(r[0].undefined for r in runs.values()):
        return
    ok_before = before[0].code == SUCCESS
    both_in = with_password[0].code == SUCCESS and runs[SUCCESS][0].code == SUCCESS
    skipped = _skipped(b, a, with_password[0], runs[SUCCESS][0], forced) if both_in else []
    # Rule 3's unknown checks (every rerun here may still branch the case: judge after).
    checks, token_after = (_unknown_checks(b, a, with_password[0], case, forced, master_keys)
                           if both_in else ([], []))
    if all(code == SUCCESS for code in case.values()) and not proof.skipped_after_pin:
        proof.skipped_after_pin = [display_name(h) for h in skipped
                                   if h.name not in ("pam_permit.so", "pam_deny.so")]
    for h in checks:
        proof.add("skips a check", "a correct PIN would skip an auth line that runs after "
                  "a correct password and can refuse the login (a module pypam does not "
                  "know counts as a check, e.g. a second factor: pam_duo, pam_exec)",
                  f"{h.where} ({h.name})")
    for example in token_after:
        proof.add("token after failure", "master_key (the keyring's token) runs in a "
                  "login that fails", example)
    for pin, (auth, setcred) in runs.items():
        where = f"when {_words(case, names)} and the PIN line returns {code_name(pin)}"
        if pin != SUCCESS and auth.code == SUCCESS and not ok_before:
            proof.add("new way in", "the stack lets someone in that it refused before, "
                      "without a correct PIN", where)
        if pin in UNAVAILABLE and (auth.code != before[0].code
                                   or setcred.code != before[1].code
                                   or _trace(a, auth) != _trace(b, before[0])):
            proof.add("unavailable", "with no PIN to check (no TPM, not enrolled, remote) "
                      "the stack does not behave as before (other modules, prompts or "
                      "results differ)", where)
        if pin == SUCCESS and (auth.code == SUCCESS) != (with_password[0].code == SUCCESS):
            if auth.code == SUCCESS:
                proof.add("more than the password", "a correct PIN gets in where a correct "
                          "password does not (the PIN would skip a check the password "
                          "passes through)", where)
            else:
                proof.add("pin refused", "a correct PIN does not get in where a correct "
                          "password does", where)
        if auth.code != SUCCESS and any(a.keys[s.handler.ident] in master_keys
                                        for s in auth.steps):
            proof.add("token after failure", "master_key (the keyring's token) runs in a "
                      "login that fails", where)
        if (master_keys and pin == SUCCESS and with_password[0].code == SUCCESS
                and _keyring_ran(with_password[0], after_master_key=False)):
            if auth.code == SUCCESS and _keyring_ran(auth, after_master_key=True):
                proof.keyring_after_pin = True
            else:
                proof.add("keyring locked after a PIN", "after a correct PIN the keyring "
                          "line does not run after master_key (it runs after a correct "
                          "password): the keyring would stay locked", where)


def _skipped(b: _Runner, a: _Runner, with_password: Outcome, with_pin: Outcome,
             forced: frozenset[Key]) -> list[Handler]:
    """The auth lines a correct password's run passes through and a correct PIN's run
    does not (by file, module and arguments: a copy the edit made for the PIN's path
    stands for the line it copies); the password itself left out."""
    pin_ran = {(key[0], key[3], key[4]) for key in
               (a.keys[s.handler.ident] for s in with_pin.steps)}
    return [s.handler for s in with_password.steps
            if (key := b.keys[s.handler.ident]) not in b.ours and key not in forced
            and (key[0], key[3], key[4]) not in pin_ran]


def _unknown_checks(b: _Runner, a: _Runner, with_password: Outcome, case: dict[Key, int],
                    forced: frozenset[Key],
                    master_keys: set[Key]) -> tuple[list[Handler], list[str]]:
    """Rules 3 and 4 for the lines the engine assumes to succeed: each one a correct
    password's run passes through is tried failing (every code its control treats
    differently). Where that refuses the password's login, the same failure (of the
    line, and of the copies the edit made of it for the PIN's path) must refuse a
    correct PIN's login too (a line the PIN's run skips does not: a second factor the
    PIN skips), and master_key must not run in that failing login, after a PIN or a
    password. Not tried: lines whose result the engine knows (pam_permit, pam_deny,
    master_key), deciding lines (every case branches over them) and
    knowledge.CHECKS_NOTHING. Returns the skipped checks and rule 4's examples."""
    skipped: list[Handler] = []
    token_after: list[str] = []
    for h in (s.handler for s in with_password.steps):
        key = b.keys[h.ident]
        name = short_name(h)
        if (key in b.ours or key in forced or key in case or name in CHECKS_NOTHING
                or name == "master_key" or fixed_result(h, "pam_sm_authenticate") is not None):
            continue
        copies = {k for k in a.keys.values() if k[6] == "added" and _copy_of(k, key)}
        for code in (c for _, (c, *_) in classes_for(h, "pam_sm_authenticate",
                                                      frozenset({name})) if c != SUCCESS):
            failed = {**case, key: code}
            if b.run(failed, None, forced)[0].code == SUCCESS:
                continue                    # this failure cannot refuse the login
            failed.update(dict.fromkeys(copies, code))
            with_pin = a.run(failed, SUCCESS)[0]
            if with_pin.code == SUCCESS and h not in skipped:
                skipped.append(h)
            for run in (with_pin, a.run(failed, AUTHINFO_UNAVAIL, forced)[0]):
                if run.code != SUCCESS and any(a.keys[s.handler.ident] in master_keys
                                               for s in run.steps):
                    token_after.append(f"{h.where} ({h.name}) returns {code_name(code)}")
    skipped.extend(h for h in _all_failing(b, a, case, forced) if h not in skipped)
    return skipped, token_after


def _all_failing(b: _Runner, a: _Runner, case: dict[Key, int],
                 forced: frozenset[Key]) -> list[Handler]:
    """Alternatives (`[success=2] pam_duo`, `[success=1] pam_exec otp`, `requisite
    pam_deny`): no single failure refuses the password while the other is assumed to
    succeed (it is even jumped over). So fail every unknown line the password's run
    reaches, again and again until it reaches no new one; if that refuses the password
    and a correct PIN still gets in, the lines failed that the PIN's run skipped are
    checks it skips."""
    failed = dict(case)
    lines: dict[Key, Handler] = {}
    while True:
        run = b.run(failed, None, forced)[0]
        new = [s.handler for s in run.steps if _unknown_line(b, s.handler, case, forced)
               and b.keys[s.handler.ident] not in failed]
        if not new:
            break
        for h in new:
            key = b.keys[h.ident]
            code = next(c for _, (c, *_) in classes_for(h, "pam_sm_authenticate",
                                                         frozenset({short_name(h)}))
                        if c != SUCCESS)
            failed[key] = code
            failed.update(dict.fromkeys(
                (k for k in a.keys.values() if k[6] == "added" and _copy_of(k, key)), code))
            lines[key] = h
    if len(lines) < 2 or run.code == SUCCESS:
        return []
    with_pin = a.run(failed, SUCCESS)[0]
    if with_pin.code != SUCCESS:
        return []
    ran = {a.keys[s.handler.ident] for s in with_pin.steps}
    return [h for key, h in lines.items() if key not in ran]


def _unknown_line(b: _Runner, h: Handler, case: dict[Key, int],
                  forced: frozenset[Key]) -> bool:
    """A line `_unknown_checks` tries failing (the engine assumes it succeeds)."""
    key = b.keys[h.ident]
    name = short_name(h)
    return not (key in b.ours or key in forced or key in case or name in CHECKS_NOTHING
                or name == "master_key" or decides(h, b.extra)
                or fixed_result(h, "pam_sm_authenticate") is not None)


def _copy_of(added: Key, key: Key) -> bool:
    """Whether the line the edit added at `added` is a copy of the line `key`."""
    args = tuple(a for a in added[4] if a != "try_first_pass")
    return (*added[:4], args, added[5]) == key[:6]
