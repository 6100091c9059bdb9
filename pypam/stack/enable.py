"""`pypam enable tpm_pin`: plan the edit of each service, and prove it safe.

For each service the plan is a new text of its own pam.d file (never of a file other
services include): the PIN line

    auth  sufficient  pam_pypam.so module=tpm_pin

inserted just before the service's password: the first auth line of the file that is,
or brings in (`@include common-auth`, `include system-auth`, `substack ...`), a
credential module. Lines before it (pam_nologin, pam_succeed_if, ...) still run first.
Jumps of earlier lines in the same file that cross the new line are re-counted
(`[success=2]` becomes `[success=3]`); a jump that crosses it from another file cannot
be re-counted and the service is refused. With `--master-key`, a master_key line goes
before each keyring line of the file.

With `--master-key` and a keyring line after the password (Debian's lightdm, or its
login with the keyring lines added), a `sufficient` PIN would end the stack before the
keyring line, which then stays locked after a PIN login. The PIN's path then gets its
own copy of the file's auth lines after the password:

    auth  [success=ok default=N]  pam_pypam.so module=tpm_pin
    ...this file's auth lines after the password (master_key before the keyring)...
    auth  sufficient  pam_permit.so
    auth  requisite   pam_deny.so
    @include common-auth          # the password, as before
    ...the same lines again...

Anything but a correct PIN jumps (N counts only lines of this block, all in this
file) to the password, exactly as before; a correct PIN runs the copied lines and ends
the stack (with success, or with a failure if one of them failed). A copied line that
includes another file is refused (the jump would have to count that file's lines,
which its package may change). The proof checks the result like any other edit, and
(its rule 5) that the keyring line runs after a correct PIN. Where the password comes
in with `substack` (Fedora's display managers), the keyring line runs after a failed
password too, so master_key before it is refused by rule 4 whatever enable writes.

The new text is loaded by the same parser as libpam's (parser.py) and proven by the
simulator (proof.py) against the old one; the stack check (check.py) must find nothing
new. Any failure refuses the service, with the reason.
"""
from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field

from . import check, debian, parser, presets, proof
from .explain import outcome_table, sentence
from .knowledge import CREDENTIAL_MODULES, credential_modules, short_name
from .model import Handler, Kind, Stack
from .modules import Probe

PYPAM_MODULE = "pam_pypam.so"
COMMENT = b"# Added by `pypam enable`: the TPM PIN first (`pypam disable` restores this file).\n"
PIN_PATH_COMMENT = (b"# A correct PIN runs the lines below (this file's auth lines after the "
                    b"password) and ends here; anything else jumps to the password.\n")
MASTER_KEY_ALTERNATIVES = (
    "--master-key needs the keyring line to run after a correct PIN and after a "
    "password, never after a failed login, and enable cannot write that for this stack. "
    "Alternatives: on Debian and Ubuntu `pypam enable tpm_pin --preset local "
    "--master-key` (pam-auth-update puts the PIN into common-auth); or the decide "
    "substack by hand (examples/pam.d/pypam-decide, pam_master_key(8)); or enable "
    "without --master-key (the keyring then opens with the password only)")


@dataclass
class ServicePlan:
    service: str
    path: str = ""                  # the pam.d file as libpam opens it
    before: bytes = b""
    after: bytes = b""
    refused: str = ""               # why the service cannot be changed
    skipped: str = ""               # why it is left alone (not an error)
    notes: list[str] = field(default_factory=list)
    proof: proof.Proof | None = None
    tables: tuple[list[str], list[str]] = ((), ())
    files: list[str] = field(default_factory=list)      # every file its stack reads
    pin_line: int = 0
    added: frozenset[tuple[str, int]] = frozenset()     # (file, line) the PIN's path copies
    new_findings: list[check.Finding] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return not self.refused and not self.skipped and self.after != self.before

    def diff(self) -> str:
        old = self.before.decode("latin-1").splitlines(keepends=True)
        new = self.after.decode("latin-1").splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, new, self.path,
                                            f"{self.path} (after pypam enable)"))


@dataclass
class Options:
    root: str = "/"
    confdir: str | None = None
    probe: Probe | None = None
    module: str = PYPAM_MODULE      # the module path written into the lines
    master_key: bool = False
    #: more modules that check a credential (`--credential-module`, as for `pypam stack
    #: check`): the PIN may go before them, and the proof branches over them
    credentials: frozenset[str] = frozenset()

    @property
    def credential_modules(self) -> frozenset[str]:
        return credential_modules(self.credentials)


def pam_dir(opts: Options) -> str:
    return opts.confdir or parser.ETC_PAM_D


def real_path(opts: Options, path: str) -> str:
    return parser.below(opts.root)(path)


def plan(services: list[str], opts: Options, explicit: bool = True) -> list[ServicePlan]:
    """A plan for each service. `explicit`: the admin named the services (a service
    that cannot be changed is refused); else they come from a preset (it is skipped)."""
    requested = list(dict.fromkeys(services))
    includers = included_by(opts)
    plans = [plan_service(name, opts, includers, set(requested)) for name in requested]
    if not explicit:
        for sp in plans:
            if sp.refused and not sp.proof:
                sp.skipped, sp.refused = sp.refused, ""
    # A service that brings in a file another plan edits (su-l includes su) gets the
    # PIN through that file: no edit of its own, and its proof runs on the edited file.
    edited = {sp.path: sp for sp in plans if sp.changes}
    for sp in plans:
        through = [other for other in edited.values() if other is not sp
                   and other.path in sp.files]
        if through and not sp.refused:
            _through(sp, through[0], opts)
    return plans


def included_by(opts: Options) -> dict[str, set[str]]:
    """file name -> the services that bring it in with include/substack/@include."""
    out: dict[str, set[str]] = {}
    try:
        names = check.list_services(opts.confdir, opts.root)
    except check.NoServices:
        return out
    for name in names:
        stack = parser.load_service(name, confdir=opts.confdir, root=opts.root,
                                    probe=opts.probe)
        for h in stack.all_handlers():
            for v in h.via:
                out.setdefault(v.target.rsplit("/", 1)[-1], set()).add(name)
    return out


def plan_service(name: str, opts: Options, includers: dict[str, set[str]],
                 requested: set[str]) -> ServicePlan:
    sp = ServicePlan(name, path=f"{pam_dir(opts).rstrip('/')}/{name}")
    if name in presets.REMOTE:
        sp.refused = ("a remote service: a PIN is for a person at the machine (a remote "
                      "guesser would spend the TPM's attempts and lock the owner out); "
                      "remote logins keep the password")
        return sp
    if name in presets.NEVER:
        sp.refused = "never edited by enable (the fallback, or a service that must ask " \
                     "for the password itself)"
        return sp
    others = includers.get(name, set()) - requested
    if others:
        sp.refused = (f"{', '.join(sorted(others))} include{'s' if len(others) == 1 else ''}"
                      " it: adding the PIN here would change more than the services "
                      "asked for (name those too, or only them)")
        return sp
    real = real_path(opts, sp.path)
    if not os.path.isfile(real):
        sp.skipped = f"no {sp.path} on this system"
        return sp
    links = _links(opts, sp.path)
    if links:
        sp.refused = links
        return sp
    with open(real, "rb") as f:
        sp.before = f.read()
    before = _load(name, opts, {})
    sp.files = list(dict.fromkeys(before.files))
    if before.failure is not None:
        sp.refused = f"pam_start already fails for it: {before.failure.message}"
        return sp
    if any(short_name(h) == "tpm_pin" for h in before.all_handlers()):
        sp.skipped = "it already has a tpm_pin line"
        return sp
    chain = before.conf["auth"]
    anchor = _anchor(chain, sp.path, opts.credential_modules)
    if anchor is None:
        sp.skipped = "its auth stack checks no password (no credential module)"
        return sp
    try:
        sp.after, pin_line = _edit(sp, chain, anchor, opts)
    except _Refuse as refusal:
        sp.refused = str(refusal)
        return sp
    after = _load(name, opts, {sp.path: sp.after})
    line = _origin(chain[anchor], sp.path)
    password = {h.ident for h in chain if _origin(h, sp.path) == line
                and short_name(h) in opts.credential_modules}
    _prove(sp, before, after, (sp.path, pin_line), password, opts, sp.added)
    if sp.refused and opts.master_key and sp.proof and (sp.added or {
            v.rule for v in sp.proof.violations} & MASTER_KEY_RULES):
        sp.refused += ". " + MASTER_KEY_ALTERNATIVES
    return sp


#: The proof's rules that --master-key can break.
MASTER_KEY_RULES = {"token after failure", "keyring locked after a PIN"}


def _through(sp: ServicePlan, other: ServicePlan, opts: Options) -> None:
    """`sp` includes the file `other` edits: prove `sp` with that edit, no edit of its own."""
    before = _load(sp.service, opts, {})
    after = _load(sp.service, opts, {other.path: other.after})
    sp.after = sp.before
    sp.notes = [f"gets the PIN through {other.path} (no edit of its own)"]
    chain = before.conf["auth"]
    password = {h.ident for h in chain if short_name(h) in opts.credential_modules
                and other.path in (h.file, *(v.file for v in h.via))}
    sp.proof = None
    _prove(sp, before, after, (other.path, other.pin_line), password, opts, other.added)


class _Refuse(Exception):
    pass


def _links(opts: Options, path: str) -> str:
    """Why `path` cannot be edited because of symbolic links, or "". Writing a service
    file also changes every service whose file is a link to it (unproven, even one
    refused by name), and writing a link would replace it by a regular file. Refused
    rather than handled: proving and listing each alias would make one edit change
    services the admin did not name, and the fix (a copy instead of a link) is the
    admin's one command."""
    if os.path.islink(real_path(opts, path)):
        return (f"{path} is a symbolic link (to {os.readlink(real_path(opts, path))}): "
                "writing it would replace the link by a file and change every service "
                "that reads the same file, unproven (make it a copy first)")
    dirs = [opts.confdir] if opts.confdir else [parser.ETC_PAM_D, parser.VENDOR_PAM_D]
    aliases = []
    for d in dirs:
        try:
            names = sorted(os.listdir(real_path(opts, d)))
        except OSError:
            continue
        aliases += [other for n in names if (other := f"{d.rstrip('/')}/{n}") != path
                    and _resolve(opts, other) == path]
    if not aliases:
        return ""
    links = "is a symbolic link" if len(aliases) == 1 else "are symbolic links"
    return (f"{', '.join(aliases)} {links} to it: the edit would give those services "
            "the PIN too, unproven (make them copies first, then name the ones you want)")


def _resolve(opts: Options, path: str) -> str | None:
    """Where a chain of symbolic links starting at `path` ends, as a path of the system
    below opts.root (an absolute link points inside that system, not this one's); `path`
    itself if it is no link, None for a loop."""
    for _ in range(40):                 # the kernel's own limit (MAXSYMLINKS)
        real = real_path(opts, path)
        if not os.path.islink(real):
            return path
        target = os.readlink(real)
        path = os.path.normpath(target if target.startswith("/")
                                else os.path.join(os.path.dirname(path), target))
    return None


def _origin(h: Handler, path: str) -> int | None:
    """The line of the service file that put `h` into the stack."""
    if h.via:
        return h.via[0].line if h.via[0].file == path else None
    return h.line if h.file == path else None


def _anchor(chain: list[Handler], path: str, credentials: frozenset[str]) -> int | None:
    """Index in `chain` of the first line brought in by the first service-file line
    that brings in a credential module."""
    for i, h in enumerate(chain):
        line = _origin(h, path)
        if line is None:
            continue
        group = [g for g in chain if _origin(g, path) == line]
        if any(short_name(g) in credentials for g in group if g.kind != Kind.SUBSTACK):
            return i
    return None


_JUMP = re.compile(rb"([A-Za-z_]+)=(\d+)")


def _edit(sp: ServicePlan, chain: list[Handler], anchor: int,
          opts: Options) -> tuple[bytes, int]:
    """The new file text and the (1-based) line number of the PIN line in it."""
    lines = sp.before.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    at = _origin(chain[anchor], sp.path)
    tail = _pin_path(lines, chain, sp, at, opts) if opts.master_key else []
    if tail:
        pin = (f"auth  [success=ok default={_handlers(tail)}]  {opts.module} "
               "module=tpm_pin\n").encode()
        inserted = [COMMENT, PIN_PATH_COMMENT, pin, *tail]
    else:
        inserted = [COMMENT, f"auth  sufficient  {opts.module} module=tpm_pin\n".encode()]
    # Where new lines go, as chain indices: the PIN's block before the anchor, one
    # master_key before each keyring line of this file.
    places = [(anchor, _handlers(inserted))]
    if opts.master_key:
        places += [(j, 1) for j, h in enumerate(chain) if h.name in presets.KEYRING_MODULES
                   and h.file == sp.path and not h.via]
    fixes: dict[int, bytes] = {}
    for i, h in enumerate(chain[:anchor]):
        if h.kind == Kind.SUBSTACK or not h.actions:
            continue
        crossing = {n: by for n in set(h.actions) if n > 0
                    and (by := _crossed(chain, i, n, places))}
        if not crossing:
            continue
        if h.file != sp.path or h.via or h.level != chain[anchor].level:
            raise _Refuse(f"{h.where}: its jump crosses the place of the PIN line from "
                          "another file, and cannot be re-counted there")
        fixes[h.line] = _recount(lines[h.line - 1], crossing, h)
    for number, text in fixes.items():
        lines[number - 1] = text
        sp.notes.append(f"re-counted the jump on line {number} (lines enable adds sit "
                        "between it and where it lands)")
    pin_index = next(i for i, line in enumerate(inserted) if b"module=tpm_pin" in line)
    pin_line = sp.pin_line = at + pin_index
    sp.added = frozenset((sp.path, pin_line + n) for n in range(1, len(inserted) - pin_index))
    new = [*lines[:at - 1], *inserted, *lines[at - 1:]]
    if tail:
        sp.notes.append("--master-key: a correct PIN runs a copy of this file's auth lines "
                        "after the password (so the keyring line runs after master_key), "
                        "then ends the stack; anything else goes to the password as before")
    if opts.master_key:
        new, count = _add_master_key(new, chain, sp, opts, at, len(inserted))
        if not count:
            sp.notes.append("--master-key: no keyring line (pam_gnome_keyring, "
                            "pam_kwallet5) in this file's auth stack")
    return b"".join(new), pin_line


def _handlers(text: list[bytes]) -> int:
    """How many lines of `text` libpam counts in a jump (the lines are auth lines with
    no include: a substack counts as one)."""
    return sum(1 for line in text if line.strip() and not line.lstrip().startswith(b"#"))


def _pin_path(lines: list[bytes], chain: list[Handler], sp: ServicePlan, at: int,
              opts: Options) -> list[bytes]:
    """With --master-key and a keyring line after the password: the lines a correct PIN
    runs (module doc), or [] when no keyring line follows the password."""
    token = f"auth  optional  {opts.module} module=master_key\n".encode()
    after = sorted({line for h in chain if (line := _origin(h, sp.path)) and line > at})
    if not any(h.name in presets.KEYRING_MODULES and h.file == sp.path and not h.via
               and h.line > at for h in chain):
        return []
    out = []
    for number in after:
        group = [h for h in chain if _origin(h, sp.path) == number]
        if any(v.how in ("include", "@include") for h in group for v in h.via[:1]):
            raise _Refuse(f"{sp.path}:{number}: an include after the password: the PIN's "
                          "path would have to jump over that file's lines, which its "
                          "package may change. " + MASTER_KEY_ALTERNATIVES)
        text = lines[number - 1]
        if text.rstrip(b"\r\n").endswith(b"\\"):
            raise _Refuse(f"{sp.path}:{number}: a line continued with a backslash after "
                          "the password cannot be copied. " + MASTER_KEY_ALTERNATIVES)
        if any(h.name in presets.KEYRING_MODULES and not h.via for h in group):
            out.append(token)
        out.append(text)
    return [*out, b"auth  sufficient  pam_permit.so\n", b"auth  requisite  pam_deny.so\n"]


def _crossed(chain: list[Handler], i: int, jump: int, places: list[tuple[int, int]]) -> int:
    """How many new lines a jump of `jump` from chain[i] crosses: those put in before a
    line it jumps over (a jump landing on the line lands on the new lines before it,
    as the line's own: the PIN before the password, master_key before the keyring)."""
    target = check.landing(chain, i, jump)
    if target == "bad":
        return 0
    end = len(chain) if target == "end" else chain.index(target)
    return sum(count for at, count in places if i < at < end)


def _recount(line: bytes, crossing: dict[int, int], h: Handler) -> bytes:
    """The line with each jump N of `crossing` made N + crossing[N]."""
    start, end = line.find(b"["), line.find(b"]")
    if start < 0 or end < start:
        raise _Refuse(f"{h.where}: a jump that crosses the PIN line, written in a way "
                      "enable cannot re-count")
    inner = _JUMP.sub(lambda m: m.group(1) + b"=" + str(
        int(m.group(2)) + crossing[int(m.group(2))]).encode()
        if int(m.group(2)) in crossing else m.group(0), line[start:end])
    return line[:start] + inner + line[end:]


def _add_master_key(lines: list[bytes], chain: list[Handler], sp: ServicePlan,
                    opts: Options, pin_at: int, inserted: int = 0) -> tuple[list[bytes], int]:
    """master_key before each keyring line of the service's own file; `inserted` lines
    were put in before line `pin_at` (the PIN's)."""
    keyring_lines = sorted({h.line for h in chain if h.name in presets.KEYRING_MODULES
                            and h.file == sp.path and not h.via}, reverse=True)
    for h in chain:
        if h.name in presets.KEYRING_MODULES and (h.file != sp.path or h.via):
            sp.notes.append(f"--master-key: the keyring line {h.where} is in another "
                            "file: not changed")
    token = f"auth  optional  {opts.module} module=master_key\n".encode()
    for number in keyring_lines:
        index = number - 1 + (inserted if number >= pin_at else 0)
        lines.insert(index, token)
    return lines, len(keyring_lines)


def _load(name: str, opts: Options, overrides: dict[str, bytes]) -> Stack:
    """The service loaded as libpam would, with each path of `overrides` holding the
    given bytes instead of the file's."""
    with tempfile.TemporaryDirectory(prefix="pypam-enable-") as tmp:
        copies = {}
        for n, (path, data) in enumerate(overrides.items()):
            copies[path] = os.path.join(tmp, str(n))
            with open(copies[path], "wb") as f:
                f.write(data)
        base = parser.below(opts.root)

        def locate(p: str) -> str:
            return copies.get(p) or base(p)
        return parser.load_service(name, confdir=opts.confdir, root=opts.root,
                                   locate=locate, probe=opts.probe)


def _prove(sp: ServicePlan, before: Stack, after: Stack, pin_at: tuple[str, int],
           password_idents: set[int], opts: Options,
           added: frozenset[tuple[str, int]] = frozenset()) -> None:
    if after.failure is not None:
        sp.refused = f"the new file would not load: {after.failure.message}"
        return
    for type_ in ("account", "password", "session"):
        if _shape(before, type_) != _shape(after, type_):
            sp.refused = f"the edit would change the {type_} stack"
            return
    keys = proof.keys_of(after, added)
    pin_keys = {keys[h.ident] for h in after.chain("auth") if (h.file, h.line) == pin_at}
    master_keys = {keys[h.ident] for h in after.chain("auth")
                   if short_name(h) == "master_key"}
    before_keys = proof.keys_of(before)
    password = {before_keys[i] for i in password_idents}
    credentials = opts.credential_modules
    sp.proof = proof.prove(before, after, pin_keys, password, master_keys, added,
                           credentials - CREDENTIAL_MODULES)
    sp.tables = (sentence(outcome_table(before, "auth")),
                 sentence(outcome_table(after, "auth")))
    old = {(f.severity, f.message) for f in check.check_stack(before, credentials)}
    sp.new_findings = list(dict.fromkeys(
        f for f in check.check_stack(after, credentials)
        if f.severity != "info" and (f.severity, f.message) not in old))
    if not sp.proof.ok:
        sp.refused = "; ".join(v.message for v in sp.proof.violations)
    elif [f for f in sp.new_findings if f.severity == "error"]:
        sp.refused = "the stack check finds new errors: " + "; ".join(
            dict.fromkeys(f.message for f in sp.new_findings if f.severity == "error"))


def _shape(stack: Stack, type_: str) -> list[tuple]:
    return [(h.kind, h.module, h.args, h.actions, h.level) for h in stack.chain(type_)]


@dataclass
class CommonAuthPlan:
    """`--preset local` on Debian: pam-auth-update puts the PIN into common-auth."""

    files: dict[str, tuple[bytes, bytes]]           # path -> (before, after), changed only
    services: list[ServicePlan]                     # every service that gets the PIN
    remote: list[str]                               # of those, services of the network
    error: str = ""

    @property
    def refused(self) -> list[ServicePlan]:
        return [sp for sp in self.services if sp.refused]


def plan_common_auth(opts: Options) -> CommonAuthPlan:
    """What `pam-auth-update --enable pypam-tpm-pin` would write (run on copies), and
    the proof for every service that reads common-auth."""
    try:
        preview = debian.preview(opts.root, "--enable", debian.PROFILE)
    except debian.DebianError as error:
        return CommonAuthPlan({}, [], [], error=str(error))
    current = debian.read_common(opts.root)
    files = {p: (current.get(p, b""), data) for p, data in preview.items()
             if current.get(p) != data}
    auth = f"{parser.ETC_PAM_D}/common-auth"
    if auth not in files:
        return CommonAuthPlan(files, [], [], error="pam-auth-update would not change "
                              "common-auth (is the profile already enabled?)")
    after_auth = files[auth][1]
    pin_line = next(n for n, line in enumerate(after_auth.splitlines(), 1)
                    if b"module=tpm_pin" in line and not line.lstrip().startswith(b"#"))
    befores = {}
    for name in check.list_services(None, opts.root):
        before = _load(name, opts, {})
        if auth in before.files and name not in debian.COMMON:
            befores[name] = before  # common-account & co. are no services of their own
    if opts.master_key:
        files.update(_master_key_edits(befores, opts))
    plans = []
    for name, before in befores.items():
        sp = ServicePlan(name, path=auth,
                         notes=[f"gets the PIN through {auth} (pam-auth-update)"])
        with open(real_path(opts, auth), "rb") as f:
            sp.before = sp.after = f.read()
        sp.files = list(dict.fromkeys(before.files))
        own = [p for p in files if p != auth and p in sp.files]
        if own:
            sp.notes.append(f"--master-key: master_key before the keyring in {', '.join(own)}")
        after = _load(name, opts, {p: data for p, (_, data) in files.items()})
        password = {h.ident for h in before.chain("auth") if h.file == auth
                    and short_name(h) in opts.credential_modules}
        _prove(sp, before, after, (auth, pin_line), password, opts)
        plans.append(sp)
    remote = [sp.service for sp in plans if sp.service in presets.REMOTE]
    return CommonAuthPlan(files, plans, remote)


def _master_key_edits(stacks: dict[str, Stack], opts: Options) -> dict[str, tuple[bytes, bytes]]:
    """--master-key with pam-auth-update: master_key before the keyring lines of each
    service's own file (the PIN line itself is in common-auth)."""
    edits: dict[str, tuple[bytes, bytes]] = {}
    for name, stack in stacks.items():
        path = f"{parser.ETC_PAM_D}/{name}"
        chain = stack.conf["auth"]
        if path in edits or not any(h.name in presets.KEYRING_MODULES and h.file == path
                                    and not h.via for h in chain):
            continue
        with open(real_path(opts, path), "rb") as f:
            data = f.read()
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        sp = ServicePlan(name, path=path, before=data)
        new, _ = _add_master_key(lines, chain, sp, opts, pin_at=len(lines) + 1)
        edits[path] = (data, b"".join(new))
    return edits
