"""`pypam stack check`: findings about dangerous or broken PAM stacks.

Each finding has a severity (error, warning, info), the file:line it is about and a
sentence. The rules (docs/pypam.md lists them): pam_start would fail; broken lines and
missing modules or files; a jump past the end ("bad jump in stack"); a success that
jumps onto pam_deny (a line was inserted after the jump was counted); auth that can
succeed while no credential module succeeded ("anyone gets in"); a stage that can never
succeed; lines that never run; an `include`d file whose `sufficient`/`done` ends the
caller's stack before its later lines; master_key running after a failed login;
configuration files or directories writable by non-root; carriage returns.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from .codes import DONE, IGNORE, IGNORE_CODE, MODULE_UNKNOWN, SUCCESS, code_name
from .explain import display_name, explore, paths
from .knowledge import CONDITION_MODULES, credential_modules
from .model import Handler, Kind, Stack
from .modules import Probe
from .parser import ETC_PAM_D, VENDOR_PAM_D, below, load_service

SEVERITY_RANK = {"info": 1, "warning": 2, "error": 3}
STAGES = ("auth", "account", "password", "session")


class NoServices(Exception):
    """No service to check (the directory is missing or unreadable)."""


@dataclass(frozen=True)
class Finding:
    severity: str
    service: str
    file: str
    line: int
    message: str
    stage: str = ""

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]

    def as_text(self) -> str:
        stage = f" {self.stage}" if self.stage else ""
        return f"{self.file}:{self.line}: {self.severity}: [{self.service}{stage}] {self.message}"

    def as_json(self) -> dict:
        return {"severity": self.severity, "service": self.service, "stage": self.stage,
                "file": self.file, "line": self.line, "message": self.message}


def _base(h: Handler) -> str:
    return display_name(h)


def list_services(confdir: str | None, root: str) -> list[str]:
    """Every file libpam could open as a service."""
    locate = below(root)
    dirs = [confdir] if confdir else [ETC_PAM_D, VENDOR_PAM_D]
    names: list[str] = []
    readable = False
    for d in dirs:
        try:
            entries = sorted(os.listdir(locate(d)))
        except OSError:
            continue
        readable = True
        for name in entries:
            if name not in names and not name.startswith(".") and not name.endswith(
                    (".dpkg-old", ".dpkg-new", ".dpkg-dist", "~", ".bak", ".rpmnew")):
                names.append(name)
    if not readable:
        raise NoServices(f"cannot read {' or '.join(dirs)} below {root}")
    return names


def check_services(services: list[str], *, confdir: str | None = None, root: str = "/",
                   probe: Probe | None = None,
                   extra_credentials: list[str] = ()) -> list[Finding]:
    """Findings for the given services (default: every service that no other file
    includes), worst first."""
    credentials = credential_modules(extra_credentials)
    explicit = bool(services)
    names = services or list_services(confdir, root)
    stacks = {n: load_service(n, confdir=confdir, root=root, probe=probe) for n in names}
    if not explicit:
        included = {v.target.rsplit("/", 1)[-1] for s in stacks.values()
                    for h in s.all_handlers() for v in h.via}
        stacks = {n: s for n, s in stacks.items() if n not in included or n == "other"}
    findings: list[Finding] = []
    seen_files: set[str] = set()
    for name, stack in stacks.items():
        findings += check_stack(stack, credentials)
        for path in dict.fromkeys(stack.files):
            if path not in seen_files:
                seen_files.add(path)
                findings += _writable(name, path, below(root))
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (-f.rank, f.file, f.line, f.message))


def _writable(service: str, path: str, locate) -> list[Finding]:
    out = []
    for target, what in ((path, "file"), (os.path.dirname(path), "directory")):
        try:
            st = os.stat(locate(target))
        except OSError:
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            continue                        # /dev/null as a pam.d file holds nothing
        if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            out.append(Finding("error", service, target, 0,
                               f"{what} writable by someone other than root (owner uid "
                               f"{st.st_uid}, mode {stat.filemode(st.st_mode)}): they can "
                               "rewrite who gets in"))
    return out


def check_stack(stack: Stack, credentials: frozenset[str]) -> list[Finding]:
    s = stack.service
    if stack.failure is not None:
        f = stack.failure
        what = {"crash": "libpam crashes", "hang": "libpam hangs",
                "undefined": "libpam's behaviour is undefined",
                "loop": "libpam recurses without end"}.get(f.fatal or "", "pam_start fails")
        return [Finding("error", s, f.file, f.line, f"{what}: {f.message}")]
    out: list[Finding] = []
    for note in stack.notes:
        severity = "info" if note.line == 0 else "warning"
        out.append(Finding(severity, s, note.file, note.line, note.message))
    for h in stack.all_handlers():
        out += _line_findings(s, h)
    for stage in STAGES:
        chain = stack.chain(stage)
        if chain:
            out += _stage_findings(stack, stage, chain, credentials)
    return out


def _line_findings(service: str, h: Handler) -> list[Finding]:
    out = []
    if h.kind == Kind.MUST_FAIL:
        out.append(Finding("error", service, h.file, h.line,
                           f"broken line, always fails (PAM_PERM_DENIED): {h.problem}"))
    elif h.kind != Kind.SUBSTACK and h.symbols is None:
        ignored = h.actions and h.actions[MODULE_UNKNOWN] == IGNORE
        out.append(Finding("info" if ignored else "error", service, h.file, h.line,
                           f"module {h.path} cannot be loaded (missing or not a module): "
                           + ("ignored by its control" if ignored else
                              "the line returns PAM_MODULE_UNKNOWN")))
    if "\r" in "".join([h.module or "", *h.args]):
        out.append(Finding("warning", service, h.file, h.line,
                           "carriage return in the line (a DOS line ending?): libpam "
                           "takes it as part of the module name or argument"))
    return out


def landing(chain: list[Handler], i: int, jump: int) -> Handler | None | str:
    """Where a jump of `jump` from chain[i] lands (libpam's counting), "end" past the
    last line, "bad" past the end of the substack."""
    level = chain[i].level
    n = len(chain)
    while i + 1 < n and chain[i + 1].level >= level and jump > 0:
        while True:
            i += 1
            if not (i + 1 < n and chain[i + 1].level > level):
                break
        jump -= 1
    if jump:
        return "bad"
    return chain[i + 1] if i + 1 < n and chain[i + 1].level == level else "end"


def _stage_findings(stack: Stack, stage: str, chain: list[Handler],
                    credentials: frozenset[str]) -> list[Finding]:
    s = stack.service
    out: list[Finding] = []
    for i, h in enumerate(chain):
        if h.kind == Kind.SUBSTACK or not h.actions:
            continue
        for code in sorted({c for c, a in enumerate(h.actions) if a > 0}):
            target = landing(chain, i, h.actions[code])
            if target == "bad":
                out.append(Finding("error", s, h.file, h.line, f"{code_name(code)}="
                                   f"{h.actions[code]} jumps past the end of its stack "
                                   "(libpam: 'bad jump in stack', the stage fails)", stage))
            elif (code == SUCCESS and isinstance(target, Handler)
                  and target.name == "pam_deny.so"):
                out.append(Finding("error", s, h.file, h.line, f"success={h.actions[code]} "
                                   f"lands on pam_deny ({target.where}): a success here "
                                   "is always refused; was a line inserted after the jump "
                                   "was counted?", stage))
    root = explore(stack, stage, credentials)
    found, _ = paths(root)
    ran = {id(h) for p in found for h in p.ran()}
    for h in chain:
        if h.kind != Kind.SUBSTACK and id(h) not in ran:
            # pam-auth-update's `[default=1] pam_permit` + `requisite pam_deny` guard
            # skips pam_deny on purpose: worth knowing, not a mistake.
            by_design = h.name in ("pam_deny.so", "pam_permit.so")
            out.append(Finding("info" if by_design else "warning", s, h.file, h.line,
                               f"{display_name(h)} never runs in {stage}", stage))
    codes = {p.code for p in found}
    if found and SUCCESS not in codes:
        decisive = [h for h in chain if h.name == "pam_deny.so"]
        out.append(Finding("info" if decisive else "warning", s, chain[0].file,
                           chain[0].line, f"{stage} can never succeed", stage))
    if stage == "auth":
        out += _credential_findings(s, found, credentials, _passwordless_by_design(s))
    out += _include_findings(s, stage, chain)
    return out


def _passwordless_by_design(service: str) -> bool:
    """Display managers' autologin and greeter services let users in without a secret
    on purpose (the greeter then asks for one through another service)."""
    return any(word in service for word in ("autologin", "greeter", "launch-environment"))


def _credential_findings(service: str, found, credentials: frozenset[str],
                         by_design: bool) -> list[Finding]:
    out = []
    for p in found:
        if p.code != SUCCESS:
            if any(_base(c.handler) == "master_key" and SUCCESS in c.codes
                   for c in p.choices):
                h = next(c.handler for c in p.choices if _base(c.handler) == "master_key")
                out.append(Finding("error", service, h.file, h.line,
                                   "master_key runs after a failed login (it would hand "
                                   "the keyring the token): keep it behind pam_deny "
                                   "inside the substack", "auth"))
            continue
        vouched = [c for c in p.choices if SUCCESS in c.codes]
        if any(_base(c.handler) in credentials for c in vouched):
            continue
        # "every credential module failed or was unavailable": a credential module that
        # returned PAM_IGNORE (and nothing else) is a different question.
        if any(_base(c.handler) in credentials and set(c.codes) == {IGNORE_CODE}
               for c in p.choices):
            continue
        gate = [c for c in vouched if _base(c.handler) in CONDITION_MODULES]
        where = p.choices[-1].handler if p.choices else None
        if where is None:
            continue
        how = " and ".join(f"{display_name(c.handler)} {c.label}" for c in p.deciding())
        if gate or by_design:
            at = gate[0].handler if gate else where
            reason = " (an autologin/greeter service)" if by_design and not gate else ""
            out.append(Finding("info", service, at.file, at.line,
                               f"auth succeeds without a credential{reason} when "
                               f"{how or 'always'}", "auth"))
        else:
            out.append(Finding("error", service, where.file, where.line,
                               f"anyone gets in: auth succeeds although no credential "
                               f"module succeeded, when {how or 'always'}", "auth"))
    return out


def _include_findings(service: str, stage: str, chain: list[Handler]) -> list[Finding]:
    out = []
    for i, h in enumerate(chain):
        step = next((v for v in reversed(h.via) if v.how in ("include", "@include")), None)
        if step is None or not h.actions or DONE not in h.actions:
            continue
        later = [g for g in chain[i + 1:] if g.level <= h.level
                 and all(v != step for v in g.via) and g.kind != Kind.SUBSTACK]
        if later:
            out.append(Finding("warning", service, step.file, step.line,
                               f"{step.how} {step.target}: {display_name(h)} ({h.where}) can "
                               f"end the whole {stage} stack on success, before "
                               f"{display_name(later[0])} ({later[0].where}); use "
                               "'substack' to keep it inside", stage))
    return out
