"""Hypothesis strategies for random pam.d scenarios (see harness.py).

Every generated stack uses the stub module (by absolute and by relative path), missing
modules, every control form (the four keywords in any case, `[value=action]` with every
action, jumps past the end, malformed brackets), include / substack / @include of files
that exist, are missing or are directories, substacks nested in includes, broken lines
(illegal types, missing fields), `other`, the vendor directory, comments and
continuation lines, and out-of-range return codes.
"""
from __future__ import annotations

from hypothesis import strategies as st

from pypam.stack.codes import RETURN_NAMES

from .harness import MISSING_MODULE, STUB, Scenario

SEQUENCES = [
    (["auth", "setcred"], "auth"), (["auth"], "auth"), (["setcred"], "auth"),
    (["auth", "auth", "setcred"], "auth"), (["acct"], "account"),
    (["open", "close"], "session"), (["close"], "session"), (["chauthtok"], "password"),
    (["chauthtok", "chauthtok"], "password"), (["auth", "acct", "open", "close"], "auth"),
]
TYPES = ["auth", "account", "session", "password"]
COMMON_CODES = [0, 0, 0, 7, 25, 25, 6, 12, 10, 9, 28]
CONTROL_WORDS = ["required", "requisite", "sufficient", "optional"]
ACTIONS = ["ok", "done", "bad", "die", "ignore", "reset"]
VALUE_NAMES = ["success", "default", "ignore", "auth_err", "new_authtok_reqd",
               "perm_denied", "user_unknown", "authinfo_unavail", "module_unknown"]
# Relative to libpam's module directory /lib/x86_64-linux-gnu/security/.
RELATIVE_STUB = "../../../.." + STUB
FUNCTIONS = ["auth", "setcred", "acct", "open", "close", "prelim", "update"]


@st.composite
def codes(draw):
    kind = draw(st.integers(0, 19))
    if kind < 14:
        return draw(st.sampled_from(COMMON_CODES))
    if kind < 18:
        return draw(st.integers(0, 30))        # any code PAM knows, but PAM_INCOMPLETE
    return draw(st.sampled_from([-1, 32, 99, 31]))


@st.composite
def controls(draw):
    kind = draw(st.integers(0, 9))
    if kind < 5:
        word = draw(st.sampled_from(CONTROL_WORDS))
        return draw(st.sampled_from([word, word.upper(), word.capitalize()]))
    if kind < 9:
        pairs = []
        for _ in range(draw(st.integers(1, 4))):
            name = draw(st.sampled_from(VALUE_NAMES))
            if draw(st.integers(0, 2)) == 0:
                action = str(draw(st.integers(1, 5)))
            else:
                action = draw(st.sampled_from(ACTIONS))
            pairs.append(f"{name}={action}")
        return "[" + " ".join(pairs) + "]"
    return draw(st.sampled_from(
        ["[succes=ok]", "[success ok]", "[success=0]", "[success=okay]", "[]",
         "success=done", "[default=1x]", "[success=ok default=bad", "bogus"]))


@st.composite
def module_line(draw, type_, log):
    dash = "-" if draw(st.integers(0, 7)) == 0 else ""
    which = draw(st.integers(0, 11))
    module = RELATIVE_STUB if which == 0 else MISSING_MODULE if which == 1 else \
        "pam_pypam_stack_missing.so" if which == 2 else STUB
    tag = draw(st.uuids()).hex[:8]
    values = {}
    for fn in draw(st.lists(st.sampled_from(FUNCTIONS), max_size=3, unique=True)):
        values[fn] = draw(codes())
    if draw(st.booleans()):
        values["rc"] = draw(codes())
    args = " ".join([f"log={log}", f"id={tag}"] + [f"{k}={v}" for k, v in values.items()])
    return f"{dash}{type_} {draw(controls())} {module} {args}"


@st.composite
def broken_line(draw, type_, log):
    return draw(st.sampled_from([
        f"bogus required {STUB} log={log} id=broken1",
        f"{type_}",
        f"{type_} required",
        f"{type_} [success=ok",
        f"{type_} optional {STUB[:-3]}.notthere",
    ]))


@st.composite
def file_lines(draw, type_, log, includable):
    """The lines of one file; `includable` are the names it may include."""
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.integers(0, 15))
        line_type = type_ if draw(st.integers(0, 5)) else draw(st.sampled_from(TYPES))
        if kind < 10 or not includable and kind < 14:
            lines.append(draw(module_line(line_type, log)))
        elif kind < 14:
            target = draw(st.sampled_from(includable))
            how = draw(st.sampled_from(["include", "substack", "substack", "@include"]))
            if how == "@include":
                lines.append(f"@include {target}")
            else:
                lines.append(f"{line_type} {how} {target}")
        else:
            lines.append(draw(broken_line(line_type, log)))
    return lines


@st.composite
def render(draw, lines):
    """Lines as file bytes, with comments, blanks and continuations mixed in."""
    out = []
    for line in lines:
        if draw(st.integers(0, 6)) == 0:
            out.append("# a comment line")
        if draw(st.integers(0, 8)) == 0:
            out.append("")
        if draw(st.integers(0, 8)) == 0 and " " in line:
            head, tail = line.split(" ", 1)
            out.append(f"{head} \\")
            if draw(st.booleans()):
                out.append("   # comment inside a continuation")
            out.append("\t" + tail)
            continue
        sep = draw(st.sampled_from([" ", "\t", "   "]))
        line = line.replace(" ", sep, 2)
        if draw(st.integers(0, 6)) == 0:
            line += "   # trailing comment"
        out.append(line)
    return ("\n".join(out) + "\n").encode()


@st.composite
def scenarios(draw):
    calls, type_ = draw(st.sampled_from(SEQUENCES))
    mode = "confdir" if draw(st.integers(0, 3)) == 0 else "bind"
    log = "@WORK@/log"
    n_inc = draw(st.integers(0, 3))
    names = [f"zz-pypam-inc{i}" for i in range(n_inc)]
    files: dict[str, bytes] = {}
    for i, name in enumerate(names):
        includable = names[i + 1:] + ["zz-pypam-missing"]
        if draw(st.integers(0, 9)) == 0:
            files[name] = b"<dir>"
            continue
        files[name] = draw(render(draw(file_lines(type_, log, includable))))
    files["svc"] = draw(render(draw(file_lines(type_, log, names + ["zz-pypam-missing"]))))
    if draw(st.integers(0, 2)) == 0:
        files["other"] = draw(render(draw(file_lines(type_, log, names))))
    vendor = mode == "bind" and draw(st.integers(0, 4)) == 0
    service = "svc"
    if vendor:
        files["usr/vendorsvc"] = draw(render(draw(file_lines(type_, log, names))))
        service = draw(st.sampled_from(["vendorsvc", "svc"]))
    if draw(st.integers(0, 9)) == 0:
        service = draw(st.sampled_from(["SVC", "nosuchservice", "other"]))
    if mode == "confdir" and service == "other" and "other" not in files:
        service = "svc"
    return Scenario(files=files, service=service, calls=calls, mode=mode, vendor=vendor)
