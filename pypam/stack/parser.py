"""Load a service's PAM configuration exactly as libpam 1.5.2 (Debian 12) does.

A line-by-line transcription of `_pam_init_handlers`, `_pam_parse_conf_file`,
`_pam_load_conf_file`, `_pam_open_config_file` and `_pam_add_handler`
(libpam/pam_handlers.c), plus Debian's `@include` (a Debian patch to libpam, not
upstream; behaviour measured against Debian's libpam0g 1.5.2-6):

- Debian resolves every `include`, `substack` and `@include` NAME itself (read from
  the disassembly of libpam.so.0 1.5.2-6+deb12u3 and measured): an absolute NAME as
  is, else /etc/pam.d/NAME, and only when /etc/pam.d is a directory. Never the
  vendor directory, never pam_start_confdir's directory (upstream 1.5.2 uses both).
  A missing NAME crashes libpam (a NULL pointer).
- `@include NAME` (any case, also `-@include`) in place of the type splices NAME's
  lines of every type (inside an `include`d file: of the including line's type) at
  the same substack level. If it fails in the service file or `other`, pam_start fails
  (PAM_ABORT); in a file reached by `include`/`substack` it becomes a must-fail line
  whose control is whatever the C array `actions` still holds: the previous line's of
  the same file, or uninitialised stack memory when there is none (libpam's result is
  then undefined: reported, never guessed).
- Errors inside a file that a line `include`s or `substack`s leave the lines read so
  far in place and turn the including line into a must-fail line; errors in the
  service file itself or in `other` make pam_start fail with PAM_ABORT.

`root` lets the whole lookup happen below another directory (an extracted package,
a mounted system): file names in results stay as libpam would see them.
"""
from __future__ import annotations

import os
import stat
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass

from . import controls
from .codes import ABORT, BAD, RETURN_VALUES, SUCCESS, UNDEF
from .model import TYPES, Handler, Kind, Note, Stack, StartFailure, Via
from .modules import ModuleProbe, Probe
from .reader import ReadError, iter_logical_lines, mkargv, strtok

ETC_PAM_D = "/etc/pam.d"
VENDOR_PAM_D = "/usr/lib/pam.d"      # Debian's libpam is built with this vendor dir
PAM_CONF = "/etc/pam.conf"
OTHER = "other"
MAX_LEVEL = 16                       # PAM_SUBSTACK_MAX_LEVEL
MAX_FILE_BYTES = 64 * 1024 * 1024    # our guard against reading a huge file
MAX_INCLUDE_DEPTH = 1000             # our guard: libpam has none (it runs out of fds)
UNKNOWN_MODULE = "<*unknown module*>"
ANY = None
Locate = Callable[[str], str]


def default_module_dir() -> str:
    """libpam's DEFAULT_MODULE_PATH on Debian (multiarch), with its trailing slash."""
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    return f"/lib/{arch}/security/"


def ascii_lower(text: str) -> str:
    """tolower()/strcasecmp() in the C locale: only A-Z change."""
    return text.translate(_LOWER)


_LOWER = {c: c + 32 for c in range(65, 91)}


class _Fatal(Exception):
    """libpam would not return: it crashes or loops forever."""

    def __init__(self, failure: StartFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class _Source:
    """An opened configuration file."""

    path: str
    data: bytes


class _Loader:
    def __init__(self, stack: Stack, locate: Locate, probe: Probe, module_dir: str) -> None:
        self.stack = stack
        self.locate = locate
        self.probe = probe
        self.module_dir = module_dir
        self.next_ident = 0
        self.open_files: list[tuple[str, int]] = []     # (path, level) being parsed

    # -- files ----------------------------------------------------------------------
    def _read(self, path: str) -> bytes | None:
        """fopen(path, "r") + reading it: None if it cannot be opened; a directory
        opens but reads as empty (fgets fails with EISDIR)."""
        real = self.locate(path)
        try:
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                return b"" if os.access(real, os.R_OK) else None
            if not stat.S_ISREG(st.st_mode):
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3):
                    return b""                          # /dev/null: empty
                raise _Fatal(StartFailure(ABORT, path, 0, "not a regular file (a device, "
                                          "FIFO or socket): libpam would block or read "
                                          "it without end", fatal="hang"))
            if st.st_size > MAX_FILE_BYTES:
                raise _Fatal(StartFailure(ABORT, path, 0, f"larger than {MAX_FILE_BYTES} "
                                          "bytes: not read (libpam would read it all)",
                                          fatal="undefined"))
            with open(real, "rb") as f:
                return f.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None

    def _isdir(self, path: str) -> bool:
        return os.path.isdir(self.locate(path))

    def open_config(self, name: str) -> _Source | None:
        """`_pam_open_config_file`."""
        if name.startswith("/"):
            candidates = [name]
        elif self.stack.confdir is not None:
            candidates = [f"{self.stack.confdir}/{name}"]
        else:
            candidates = [f"{ETC_PAM_D}/{name}", f"{VENDOR_PAM_D}/{name}"]
        for path in candidates:
            data = self._read(path)
            if data is not None:
                self.stack.files.append(path)
                return _Source(path, data)
        return None

    def where(self, name: str) -> str:
        """The first file libpam tries for a service name (for messages)."""
        if self.stack.confdir is not None:
            return f"{self.stack.confdir}/{name}"
        return f"{ETC_PAM_D}/{name}"

    def note(self, file: str, line: int, message: str) -> None:
        self.stack.notes.append(Note(file, line, message))

    # -- _pam_load_conf_file ---------------------------------------------------------
    def load_conf_file(self, name: str | None, service: str, type_: str | None,
                       level: int, via: tuple[Via, ...], at: tuple[str, int]) -> int:
        if level >= MAX_LEVEL:
            self.note(*at, "maximum level of substacks reached")
            return ABORT
        if name is None:
            self.note(*at, "no config name supplied")
            return ABORT
        source = self.open_config(name)
        if source is None:
            self.note(*at, f"unable to open config for {name}")
            return ABORT
        key = (source.path, level)
        if key in self.open_files or len(self.open_files) >= MAX_INCLUDE_DEPTH:
            raise _Fatal(StartFailure(
                ABORT, at[0], at[1],
                f"include loop: {source.path} includes itself at the same substack level; "
                "libpam 1.5.2 recurses until it runs out of file descriptors "
                "(PAM_ABORT or a must-fail line) or out of stack (the program crashes)",
                fatal="loop"))
        retval = self.parse_file(source, service, type_, level, via)
        if retval != SUCCESS:
            self.note(*at, f"error reading {source.path}")
        return retval

    # -- _pam_parse_conf_file --------------------------------------------------------
    def parse_file(self, source: _Source, known_service: str | None, requested: str | None,
                   level: int, via: tuple[Via, ...]) -> int:
        self.open_files.append((source.path, level))
        frame: dict[str, list[int] | None] = {"actions": None}   # the C stack array
        try:
            for logical in iter_logical_lines(source.data):
                retval = self.parse_line(source.path, logical.number, logical.text,
                                         known_service, requested, level, via, frame)
                if retval != SUCCESS:
                    return retval
        except ReadError as error:
            if error.hang:
                raise _Fatal(StartFailure(ABORT, source.path, error.number, str(error),
                                          fatal="hang")) from None
            self.note(source.path, error.number, str(error))
            return ABORT
        finally:
            self.open_files.pop()
        return SUCCESS

    def parse_line(self, file: str, number: int, text: str, known_service: str | None,
                   requested: str | None, level: int, via: tuple[Via, ...],
                   frame: dict[str, list[int] | None]) -> int:
        if known_service is not None:
            pos: int | None = 0
            this_service = known_service
        else:
            this_service, pos = strtok(text, 0)
            if this_service is None:
                return SUCCESS
        other = ascii_lower(this_service) == OTHER
        if not (other or ascii_lower(this_service) == self.stack.service):
            return SUCCESS
        kind = Kind.MODULE
        problem = None
        tok, pos = strtok(text, pos)
        if tok is None:
            problem = "empty module type"
            type_ = requested or "auth"
            kind = Kind.MUST_FAIL
        else:
            if tok.startswith("-"):
                kind = Kind.SILENT_MODULE
                tok = tok[1:]
            word = ascii_lower(tok)
            if word == "@include":
                return self.debian_include(file, number, text, pos, this_service,
                                           requested, level, via, frame)
            if word in TYPES:
                type_ = word
            else:
                problem = f"illegal module type: {tok}"
                type_ = requested or "auth"
                kind = Kind.MUST_FAIL
        if requested is not None and type_ != requested:
            return SUCCESS

        control_text, pos = strtok(text, pos)
        include = substack = False
        actions = frame["actions"] = [UNDEF] * RETURN_VALUES
        if control_text is None:
            problem = problem or "no control flag supplied"
            actions[:] = [BAD] * RETURN_VALUES
            kind = Kind.MUST_FAIL
        elif (fixed := controls.keyword_control(control_text)) is not None:
            actions[:] = fixed.actions
        elif ascii_lower(control_text) in ("include", "substack"):
            include = True
            substack = ascii_lower(control_text) == "substack"
        else:
            parsed = controls.bracket_control(control_text)
            actions[:] = parsed.actions
            if parsed.error:
                self.note(file, number, f"bad control [{control_text}]: {parsed.error}; "
                          "every value is treated as bad")

        tok, pos = strtok(text, pos)
        if include:
            how = "substack" if substack else "include"
            if substack and self.add_handler(
                    Kind.SUBSTACK, other, level, type_, actions, tok, (), file, number,
                    control_text or "", via, None) != SUCCESS:
                self.note(file, number, f"error adding substack {tok}")
                return ABORT
            if self.include(tok, how, this_service, type_, level + substack, via,
                            (file, number)) == SUCCESS:
                return SUCCESS
            actions[:] = [BAD if a == UNDEF else a for a in actions]
            problem = f"{how} {tok} could not be loaded"
            return self.add_handler(Kind.MUST_FAIL, other, level, type_, actions, None, (),
                                    file, number, control_text or "", via, problem)
        if tok is None:
            problem = problem or "no module name supplied"
            kind = Kind.MUST_FAIL
        args = tuple(mkargv(text, pos))
        return self.add_handler(kind, other, level, type_, actions, tok, args, file, number,
                                control_text or "", via, problem)

    def include(self, name: str | None, how: str, service: str, type_: str | None,
                level: int, via: tuple[Via, ...], at: tuple[str, int]) -> int:
        """Debian's resolution of an include/substack/@include NAME, then loading it."""
        if name is None:
            raise _Fatal(StartFailure(ABORT, at[0], at[1], f"{how} without a file name "
                                      "crashes Debian's libpam 1.5.2", fatal="crash"))
        if name.startswith("/"):
            path = name
        elif self._isdir(ETC_PAM_D):
            path = f"{ETC_PAM_D}/{name}"
        else:
            self.note(*at, f"{how} {name}: no {ETC_PAM_D} directory to look in")
            return ABORT
        return self.load_conf_file(path, service, type_, level,
                                   (*via, Via(at[0], at[1], how, name)), at)

    def debian_include(self, file: str, number: int, text: str, pos: int | None,
                       service: str, requested: str | None, level: int,
                       via: tuple[Via, ...], frame: dict[str, list[int] | None]) -> int:
        name, _ = strtok(text, pos)
        if self.include(name, "@include", service, requested, level, via,
                        (file, number)) == SUCCESS:
            return SUCCESS
        if requested is None:           # the must-fail line would have no type: abort
            self.note(file, number, f"@include {name} failed: libpam refuses the "
                      "configuration")
            return ABORT
        left = frame["actions"]
        problem = f"@include {name} could not be loaded"
        if left is None:
            problem += ("; its control is uninitialised memory in libpam 1.5.2: "
                        "the outcome is undefined")
            actions: list[int] = []
        else:
            left[:] = [BAD if a == UNDEF else a for a in left]
            actions = left
        return self.add_handler(Kind.MUST_FAIL, ascii_lower(service) == OTHER, level,
                                requested, actions, None, (), file, number, "@include",
                                via, problem)

    # -- _pam_add_handler ------------------------------------------------------------
    def add_handler(self, kind: Kind, other: bool, level: int, type_: str,
                    actions: list[int], module: str | None, args: tuple[str, ...],
                    file: str, number: int, control: str, via: tuple[Via, ...],
                    problem: str | None) -> int:
        path = None
        symbols = None
        if kind in (Kind.MODULE, Kind.SILENT_MODULE) and module is not None:
            path = module if module.startswith("/") else self.module_dir + module
            symbols = self.probe(path)
            if symbols is None:
                problem = f"cannot load {path}"
        if _module_name(module if module is not None else UNKNOWN_MODULE) is None:
            # libpam has already linked the half-built handler (its `next` pointer is
            # uninitialised malloc memory) when extract_modulename fails.
            if len(self.open_files) > 1:
                raise _Fatal(StartFailure(
                    ABORT, file, number, f"module name {module!r} is empty or '?': libpam "
                    "1.5.2 leaves a half-built handler in its list; what follows is "
                    "undefined (crash, hang or garbage)", fatal="undefined"))
            self.note(file, number, f"module name {module!r} is empty or '?': "
                      "libpam refuses the configuration")
            return ABORT
        handler = Handler(
            ident=self.next_ident, kind=kind, level=level, type=type_,
            actions=tuple(actions),
            file=file, line=number, control=control, module=module, path=path,
            args=args, symbols=symbols, problem=problem, via=via, other=other)
        self.next_ident += 1
        (self.stack.other if other else self.stack.conf)[type_].append(handler)
        return SUCCESS


def _module_name(path: str) -> str | None:
    """`extract_modulename`: the file name without its last extension; None when
    that is empty or "?" (libpam then refuses the whole configuration)."""
    name = path.rsplit("/", 1)[-1]
    if "." in name:
        name = name[:name.rindex(".")]
    return None if name in ("", "?") else name


def service_name(name: str) -> str:
    """What pam_start keeps of an application's service name."""
    return ascii_lower(name.rsplit("/", 1)[-1])


def below(root: str) -> Locate:
    """Configuration files of a system mounted or extracted at `root`."""
    if root in ("", "/"):
        return lambda path: path
    return lambda path: os.path.join(root, path.lstrip("/"))


def load_service(service: str, *, confdir: str | None = None, root: str = "/",
                 locate: Locate | None = None, probe: Probe | None = None,
                 module_dir: str | None = None) -> Stack:
    """pam_start's `_pam_init_handlers`: the service's handler lists, or why pam_start
    fails (`Stack.failure`). `confdir` is pam_start_confdir's directory; `root` (or,
    finer, `locate`: libpam's path -> the file to read) says where the files are."""
    stack = Stack(service=service_name(service), confdir=confdir)
    loader = _Loader(stack, locate or below(root), probe or ModuleProbe(root),
                     module_dir or default_module_dir())
    try:
        retval = _init_handlers(loader, stack)
    except _Fatal as fatal:
        stack.failure = fatal.failure
        return stack
    if retval != SUCCESS and stack.failure is None:
        last = stack.notes[-1] if stack.notes else Note(stack.service, 0, "")
        stack.failure = StartFailure(ABORT, last.file, last.line,
                                     "libpam cannot load the configuration: " + last.message)
    return stack


def _init_handlers(loader: _Loader, stack: Stack) -> int:
    if (stack.confdir is not None or loader._isdir(ETC_PAM_D)
            or loader._isdir(VENDOR_PAM_D)):
        read_something = False
        source = loader.open_config(stack.service)
        if source is not None:
            retval = loader.parse_file(source, stack.service, ANY, 0, ())
            read_something = retval == SUCCESS
        else:
            retval = SUCCESS
            loader.note(loader.where(stack.service), 0, f"no configuration file for "
                        f"service '{stack.service}': only 'other' applies")
        if retval == SUCCESS:
            source = loader.open_config(OTHER)
            if source is not None:
                retval = loader.parse_file(source, OTHER, ANY, 0, ())
                read_something = read_something or retval == SUCCESS
            else:
                loader.note(loader.where(OTHER), 0, "no default config 'other'")
            if not read_something:
                if retval == SUCCESS:
                    loader.note(loader.where(stack.service), 0, f"neither "
                                f"'{stack.service}' nor 'other' could be read")
                retval = ABORT
        return retval
    data = loader._read(PAM_CONF)
    if data is None:
        loader.note(PAM_CONF, 0, f"could not open {PAM_CONF}")
        return ABORT
    stack.files.append(PAM_CONF)
    return loader.parse_file(_Source(PAM_CONF, data), None, ANY, 0, ())
