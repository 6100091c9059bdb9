"""Every distinct way a stage can end, found by walking libpam's dispatcher itself.

`explore` runs `simulate.Walk` and branches only at lines actually reached, over the
outcome classes a module can have: succeeds / fails / is unavailable / is ignored, plus
any other return code the line's control treats differently. Branches that lead to the
same dispatcher state share their continuation (memoised on `Walk.key`), and classes
with the same continuation merge ("fails or is unavailable"). `paths` then lists each
way to the end with the conditions that decided it, and `outcome_table` groups them by
result, in words.

`setcred` and `close_session` follow the chain `auth` and `session` froze, so they are
explained through those stages; `password` is explained as its update pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .codes import (
    IGNORE_CODE,
    MODULE_UNKNOWN,
    MUST_FAIL_CODE,
    RETURN_VALUES,
    SUCCESS,
    code_name,
)
from .knowledge import decides, fixed_result, short_name
from .model import Handler, Kind, Stack
from .simulate import PLEASE_FREEZE, STAGES, Walk

#: (label, representative code) for the classes every module line is branched over.
CLASSES: tuple[tuple[str, int], ...] = (
    ("succeeds", SUCCESS), ("fails", 7), ("is unavailable", 9), ("is ignored", IGNORE_CODE))
MAX_PATHS = 400
INCOMPLETE = 31


@dataclass(frozen=True)
class Choice:
    """One outcome of a line on a path: `label` as words, the codes it stands for."""

    handler: Handler
    label: str
    codes: tuple[int, ...]
    forced: bool = False          # the line has one possible outcome (missing, must-fail)


@dataclass
class Node:
    """A point in the exploration: a line with its branches, or the end (`code`)."""

    handler: Handler | None = None
    branches: list[tuple[Choice, Node]] = field(default_factory=list)
    code: int | None = None
    bad_jump: bool = False


@dataclass
class Path:
    """One way through the stage: the choices in order and the final code."""

    choices: list[Choice]
    code: int

    def ran(self) -> list[Handler]:
        return [c.handler for c in self.choices]

    def deciding(self) -> list[Choice]:
        """The choices that mattered (the line had more than one continuation)."""
        return [c for c in self.choices if not c.forced]


def classes_for(h: Handler, function: str,
                extra: frozenset[str] = frozenset()) -> list[tuple[str, tuple[int, ...]]]:
    """(label, codes) a line is branched over: one fixed outcome for missing modules,
    must-fail lines, pam_permit/pam_deny and modules that decide nothing (assumed to
    succeed); else the four classes, plus codes whose action differs from all of them."""
    if h.kind == Kind.MUST_FAIL:
        return [("fails (broken line)", (MUST_FAIL_CODE,))]
    if not h.calls(function):
        return [("is missing (PAM_MODULE_UNKNOWN)", (MODULE_UNKNOWN,))]
    fixed = fixed_result(h, function)
    if fixed is not None:
        return [("succeeds" if fixed == SUCCESS else "fails", (fixed,))]
    if not decides(h, extra):
        return [("succeeds (assumed)", (SUCCESS,))]
    out = [(label, (code,)) for label, code in CLASSES]
    seen = {h.actions[code] for _, code in CLASSES} if h.actions else set()
    for code in range(RETURN_VALUES):
        if h.actions and code != INCOMPLETE and h.actions[code] not in seen:
            seen.add(h.actions[code])
            out.append((f"returns {code_name(code)}", (code,)))
    return out


def explore(stack: Stack, stage: str, extra: frozenset[str] = frozenset()) -> Node:
    """The exploration tree (a DAG: shared continuations) of one stage."""
    type_, function, _ = STAGES[stage if stage not in ("setcred", "close_session")
                                else {"setcred": "auth", "close_session": "session"}[stage]]
    chain = stack.chain(type_)
    if not chain:
        return Node(code=MUST_FAIL_CODE)
    memo: dict[tuple, Node] = {}
    # Depth-first, children before parents, with an explicit stack: a stack can have
    # thousands of lines (a 1 MB line is read as a thousand lines).
    todo: list[tuple[Walk, bool]] = [(Walk(), False)]
    while todo:
        walk, children_done = todo.pop()
        key = walk.key()
        if key in memo:
            continue
        probe = walk.copy()
        h = probe.seek(chain)
        if h is None:
            memo[key] = Node(code=probe.final_status())
            continue
        options = classes_for(h, function, extra)
        steps = []
        for label, codes in options:
            nxt = probe.copy()
            action = "undefined"
            if h.actions:                     # undefined control: stop there, fail closed
                _, action = nxt.apply(chain, codes[0], codes[0], PLEASE_FREEZE)
            steps.append((label, codes, nxt, action))
        waiting = [nxt for _, _, nxt, action in steps
                   if action != "undefined" and nxt.key() not in memo]
        if waiting and not children_done:
            todo.append((walk, True))
            todo.extend((nxt, False) for nxt in waiting)
            continue
        node = Node(handler=h)
        by_child: dict[int, tuple[list[str], list[int], Node]] = {}
        for label, codes, nxt, action in steps:
            child = (Node(code=MUST_FAIL_CODE, bad_jump=True) if action == "undefined"
                     else memo[nxt.key()])
            node.bad_jump = node.bad_jump or action == "bad jump"
            slot = by_child.setdefault(id(child), ([], [], child))
            slot[0].append(label)
            slot[1].extend(codes)
        for labels, codes, child in by_child.values():
            node.branches.append((Choice(h, " or ".join(labels), tuple(codes),
                                         len(by_child) == 1), child))
        memo[key] = node
    return memo[Walk().key()]


def paths(root: Node, limit: int = MAX_PATHS) -> tuple[list[Path], bool]:
    """All root-to-end paths (at most `limit`; the flag says whether some were cut)."""
    out: list[Path] = []
    truncated = False
    stack: list[tuple[Node, list[Choice]]] = [(root, [])]
    while stack:
        node, so_far = stack.pop()
        if node.code is not None and not node.branches:
            if len(out) >= limit:
                truncated = True
                break
            out.append(Path(so_far, node.code))
            continue
        for choice, child in reversed(node.branches):
            stack.append((child, [*so_far, choice]))
    return out, truncated


def display_name(h: Handler, chain_names: dict[str, int] | None = None) -> str:
    """How a line is named in sentences (`pam_unix`, `tpm_pin`), made unique with
    file:line when the stage has it more than once."""
    base = short_name(h)
    if chain_names is not None and chain_names.get(base, 0) > 1:
        base = f"{base} ({h.file.rsplit('/', 1)[-1]}:{h.line})"
    return base


def _names(chain: list[Handler]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for h in chain:
        if h.kind != Kind.SUBSTACK:
            key = display_name(h)
            counts[key] = counts.get(key, 0) + 1
    return counts


def result_words(code: int) -> str:
    return "succeeds" if code == SUCCESS else f"fails ({code_name(code)})"


def outcome_table(stack: Stack, stage: str, extra: frozenset[str] = frozenset()) -> dict:
    """The outcomes of a stage as data: for each final result, the conditions of each
    way to reach it (in words), and which lines run after which results."""
    type_ = STAGES["auth" if stage == "setcred" else "session" if stage == "close_session"
                   else stage][0]
    chain = stack.chain(type_)
    names = _names(chain)
    found, truncated = paths(explore(stack, stage, extra))
    groups: dict[int, list[Path]] = {}
    for p in found:
        groups.setdefault(p.code, []).append(p)
    outcomes = []
    for code in sorted(groups, key=lambda c: (c != SUCCESS, c)):
        ways = []
        for way in _merge_ways([[(display_name(c.handler, names), c.label)
                                 for c in p.deciding()] for p in groups[code]]):
            words = [f"{name} {label}" for name, label in way]
            ways.append(" and ".join(words) if words else "always")
        outcomes.append({"code": code, "result": code_name(code),
                         "summary": result_words(code), "when": _unique(ways)})
    runs = []
    for h in chain:
        if h.kind == Kind.SUBSTACK:
            continue
        after = sorted({p.code for p in found if h in p.ran()},
                       key=lambda c: (c != SUCCESS, c))
        runs.append({"file": h.file, "line": h.line, "name": display_name(h, names),
                     "runs_when": [code_name(c) for c in after]})
    return {"outcomes": outcomes, "runs": runs, "paths": len(found), "truncated": truncated}


def _merge_ways(ways: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """Join ways that differ only in one line's outcome ("pam_nologin succeeds" and
    "pam_nologin is ignored", the rest equal) into one ("succeeds or is ignored")."""
    ways = [list(w) for w in ways]
    merged = True
    while merged:
        merged = False
        for a in range(len(ways)):
            for b in range(a + 1, len(ways)):
                x, y = ways[a], ways[b]
                if len(x) != len(y):
                    continue
                diff = [i for i in range(len(x)) if x[i] != y[i]]
                if len(diff) == 1 and x[diff[0]][0] == y[diff[0]][0]:
                    i = diff[0]
                    parts = x[i][1].split(" or ") + y[i][1].split(" or ")
                    x[i] = (x[i][0], " or ".join(dict.fromkeys(parts)))
                    del ways[b]
                    merged = True
                    break
            if merged:
                break
    return ways


def _unique(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def sentence(table: dict) -> list[str]:
    """The table as sentences a person reads."""
    lines = []
    for outcome in table["outcomes"]:
        when = outcome["when"]
        if when == ["always"]:
            lines.append(f"{outcome['summary'].capitalize()} always.")
        else:
            lines.append(f"{outcome['summary'].capitalize()} if " + ";\n    or ".join(when) + ".")
    everything = [o["result"] for o in table["outcomes"]]
    for run in table["runs"]:
        when = run["runs_when"]
        if not when:
            lines.append(f"{run['name']} never runs.")
        elif len(everything) > 1 and when == everything:
            lines.append(f"{run['name']} runs whatever the result.")
        elif len(everything) > 1:
            lines.append(f"{run['name']} runs only when the result is "
                         + " or ".join(when) + ".")
    if table["truncated"]:
        lines.append(f"(only the first {MAX_PATHS} ways are shown)")
    return lines
