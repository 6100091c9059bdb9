"""The control field of a pam.d line, decoded as libpam 1.5.2 does.

`required`, `requisite`, `optional`, `sufficient` are fixed action tables
(pam_handlers.c); anything else is parsed by `_pam_parse_control` (pam_misc.c):
`value=action` pairs matched by prefix, where one syntax error makes every value `bad`.
Values a control does not name are set to the default afterwards (`bad` unless the
control says `default=`). Case: keywords are case-insensitive, `[...]` names are not.
"""
from __future__ import annotations

from dataclasses import dataclass

from .codes import (
    ACTION_NAMES,
    BAD,
    DIE,
    DONE,
    IGNORE,
    IGNORE_CODE,
    NEW_AUTHTOK_REQD,
    OK,
    RETURN_NAMES,
    RETURN_VALUES,
    SUCCESS,
    UNDEF,
)

KEYWORDS = ("required", "requisite", "optional", "sufficient")
_C_SPACE = " \t\n\v\f\r"          # isspace() in the C locale
_INT_MAX = 2**31


@dataclass(frozen=True)
class Control:
    """32 actions (index = return code) and, if the text was malformed, why."""

    actions: tuple[int, ...]
    error: str | None = None


def set_default(actions: list[int], default: int) -> None:
    """`_pam_set_default_control`: every still-undefined value gets `default`."""
    for i, action in enumerate(actions):
        if action == UNDEF:
            actions[i] = default


def keyword_control(word: str) -> Control | None:
    """The table of one of the four keywords (any case, ASCII only), or None."""
    return _KEYWORD_TABLES.get(word.lower() if word.isascii() else word)


def _keyword_table(word: str) -> Control | None:
    actions = [UNDEF] * RETURN_VALUES
    if word in ("required", "requisite"):
        actions[SUCCESS] = actions[NEW_AUTHTOK_REQD] = OK
        actions[IGNORE_CODE] = IGNORE
        set_default(actions, BAD if word == "required" else DIE)
    elif word == "optional":
        actions[SUCCESS] = actions[NEW_AUTHTOK_REQD] = OK
        set_default(actions, IGNORE)
    elif word == "sufficient":
        actions[SUCCESS] = actions[NEW_AUTHTOK_REQD] = DONE
        set_default(actions, IGNORE)
    else:
        return None
    return Control(tuple(actions))


_KEYWORD_TABLES = {word: _keyword_table(word) for word in KEYWORDS}


def _wrap_int(value: int) -> int:
    """C int overflow as gcc's code does it (two's complement)."""
    value %= 2 * _INT_MAX
    return value - 2 * _INT_MAX if value >= _INT_MAX else value


def bracket_control(text: str) -> Control:
    """`_pam_parse_control` followed by the default `bad`."""
    actions = [UNDEF] * RETURN_VALUES
    error = _parse_pairs(actions, text)
    if error is not None:
        actions = [BAD] * RETURN_VALUES
    set_default(actions, BAD)
    return Control(tuple(actions), error)


def _parse_pairs(actions: list[int], tok: str) -> str | None:
    i, n = 0, len(tok)
    names = (*RETURN_NAMES, "default")
    while i < n:
        while i < n and tok[i] in _C_SPACE:
            i += 1
        if i >= n:
            break
        for ret, name in enumerate(names):
            if tok.startswith(name, i):
                break
        else:
            return f"expecting return value at {tok[i:]!r}"
        i += len(names[ret])
        if i >= n:
            return f"expecting return value at {tok[i - len(names[ret]):]!r}"
        while i < n and tok[i] in _C_SPACE:
            i += 1
        if i >= n or tok[i] != "=":
            return f"expecting '=' at {tok[i:]!r}"
        i += 1
        while i < n and tok[i] in _C_SPACE:
            i += 1
        if i >= n:
            return "expecting action"
        for index, word in enumerate(ACTION_NAMES):
            if tok.startswith(word, i):
                act = -index
                i += len(word)
                break
        else:
            if i >= n or not tok[i].isdigit() or not tok[i].isascii():
                return f"expecting jump number at {tok[i:]!r}"
            act = 0
            while i < n and tok[i].isascii() and tok[i].isdigit():
                act = _wrap_int(act * 10 + ord(tok[i]) - 48)
                i += 1
            if act == 0:
                return "expecting non-zero jump"
        if ret != RETURN_VALUES:
            actions[ret] = act
        else:
            set_default(actions, act)
    return None


def describe(actions: tuple[int, ...]) -> str:
    """A canonical `[value=action ...]` text for these actions (for display)."""
    from .codes import action_name

    parts = [f"{RETURN_NAMES[code]}={action_name(a).replace('jump ', '')}"
             for code, a in enumerate(actions)]
    return "[" + " ".join(parts) + "]"


__all__ = [
    "BAD",
    "DIE",
    "DONE",
    "IGNORE",
    "KEYWORDS",
    "OK",
    "Control",
    "bracket_control",
    "keyword_control",
    "set_default",
]
