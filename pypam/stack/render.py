"""Text and JSON for `pypam stack` answers, and the --result pattern rules."""
from __future__ import annotations

from .codes import code_name
from .explain import display_name, outcome_table, sentence
from .model import Handler, Kind, Stack
from .parser import ETC_PAM_D, VENDOR_PAM_D
from .simulate import STAGES, Outcome


def pypam_module(h: Handler) -> str | None:
    """The pypam module a pam_pypam.so line runs (`module=NAME`), if any."""
    if h.name != "pam_pypam.so":
        return None
    for arg in h.args:
        if arg.startswith("module="):
            return arg[len("module="):]
    return None


def matches(h: Handler, pattern: str, confdir: str | None) -> bool:
    """--result PATTERN: FILE:LINE (FILE as libpam opened it, or relative to the pam.d
    directory), a module file name or path as written, or a pypam module name."""
    file, sep, line = pattern.rpartition(":")
    if sep and line.isdigit():
        if int(line) != h.line:
            return False
        dirs = [d for d in (confdir, ETC_PAM_D, VENDOR_PAM_D) if d]
        return h.file == file or any(h.file == f"{d.rstrip('/')}/{file}" for d in dirs)
    if h.module is None:
        return False
    return pattern in (h.module, h.name) or pattern == pypam_module(h)


def pattern_hint(h: Handler) -> str:
    return f"try --result {h.file}:{h.line}=CODE or --result {h.name}=CODE"


def step_json(step) -> dict:
    h = step.handler
    entry = {"file": h.file, "line": h.line, "module": h.module, "args": list(h.args),
             "returned": step.returned, "action": step.action}
    if step.pass_:
        entry["pass"] = step.pass_
    return entry


def simulation_json(stack: Stack, stage: str, outcome: Outcome) -> dict:
    data = {"service": stack.service, "stage": stage, "code": outcome.code,
            "result": code_name(outcome.code), "stage_ran": outcome.stage_ran,
            "ran": [step_json(s) for s in outcome.steps]}
    if not outcome.stage_ran and stack.failure is not None:
        f = stack.failure
        data["error"] = {"file": f.file, "line": f.line, "message": f.message,
                         "fatal": f.fatal}
    if outcome.undefined:
        data["undefined"] = outcome.undefined
    return data


def simulation_text(stack: Stack, stage: str, outcome: Outcome) -> str:
    lines = []
    if not outcome.stage_ran and stack.failure is not None:
        f = stack.failure
        lines.append(f"pam_start fails: {f.file}:{f.line}: {f.message}")
    for s in outcome.steps:
        h = s.handler
        what = h.module or f"<{h.kind.value}>"
        tag = f" [{s.pass_}]" if s.pass_ else ""
        lines.append(f"{h.where}: {what}{tag} returned {code_name(s.returned)} -> {s.action}")
    if outcome.undefined:
        lines.append(f"undefined: {outcome.undefined}")
    lines.append(f"{stack.service} {stage}: {code_name(outcome.code)} ({outcome.code})")
    return "\n".join(lines)


def via_text(h: Handler) -> str:
    return " <- ".join(f"{v.how} {v.target} at {v.file}:{v.line}" for v in reversed(h.via))


def line_json(h: Handler) -> dict:
    return {"file": h.file, "line": h.line, "level": h.level, "kind": h.kind.value,
            "control": h.control, "module": h.module, "args": list(h.args),
            "loadable": h.symbols is not None or h.kind not in (Kind.MODULE,
                                                                Kind.SILENT_MODULE),
            "problem": h.problem,
            "via": [{"file": v.file, "line": v.line, "how": v.how, "target": v.target}
                    for v in h.via]}


def explanation_json(stack: Stack, stages: list[str]) -> dict:
    data: dict = {"service": stack.service, "files": list(dict.fromkeys(stack.files)),
                  "notes": [{"file": n.file, "line": n.line, "message": n.message}
                            for n in stack.notes], "stages": []}
    if stack.failure is not None:
        f = stack.failure
        data["error"] = {"file": f.file, "line": f.line, "message": f.message,
                         "fatal": f.fatal, "code": f.code}
        return data
    for stage in stages:
        type_ = STAGES[stage][0]
        chain = stack.chain(type_)
        entry = {"stage": stage, "from_other": not stack.conf[type_] and bool(chain),
                 "lines": [line_json(h) for h in chain]}
        entry.update(outcome_table(stack, stage))
        data["stages"].append(entry)
    return data


def _via_note(line: dict) -> str:
    """`  (via login:3 include)` for a line an include or @include brought in (substack
    lines show by their indentation)."""
    steps = [v for v in line["via"] if v["how"] != "substack"]
    if not steps:
        return ""
    last = steps[-1]
    return f"  (via {last['file'].rsplit('/', 1)[-1]}:{last['line']} {last['how']})"


def explanation_text(data: dict) -> str:
    out = [f"service {data['service']} (files: {', '.join(data['files']) or 'none'})"]
    if "error" in data:
        e = data["error"]
        out.append(f"  pam_start fails: {e['file']}:{e['line']}: {e['message']}")
        return "\n".join(out)
    for stage in data["stages"]:
        source = " (from 'other')" if stage["from_other"] else ""
        out.append(f"\n{stage['stage']}{source}:")
        for line in stage["lines"]:
            indent = "  " * (line["level"] + 1)
            where = f"{line['file'].rsplit('/', 1)[-1]}:{line['line']}"
            if line["kind"] == "substack":
                out.append(f"{indent}{where:<22} substack {line['module']}")
                continue
            text = " ".join([line["control"] or "?", line["module"] or "?", *line["args"]])
            flag = f"   !! {line['problem']}" if line["problem"] else ""
            out.append(f"{indent}{where:<22} {text}{flag}{_via_note(line)}")
        out.append("  outcomes:")
        for sentence_ in sentence(stage):
            out.append("    " + sentence_)
    if data["notes"]:
        out.append("\nnotes:")
        for n in data["notes"]:
            out.append(f"  {n['file']}:{n['line']}: {n['message']}")
    return "\n".join(out)


__all__ = ["display_name", "explanation_json", "explanation_text", "matches",
           "simulation_json", "simulation_text"]
