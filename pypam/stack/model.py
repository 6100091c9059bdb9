"""What libpam builds from the configuration: one handler list per PAM type.

A `Stack` holds, for the service and for `other`, libpam's linked lists
(`pamh->handlers.conf` / `.other`) as Python lists of `Handler`, in the order libpam
walks them, each entry remembering the pam.d line it came from and how that file was
reached. `auth` lines serve both pam_authenticate and pam_setcred, `session` lines both
pam_open_session and pam_close_session (libpam keeps two parallel lists; one suffices).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

TYPES = ("auth", "account", "session", "password")


class Kind(enum.Enum):
    """libpam's handler_type (pam_private.h PAM_HT_*)."""

    MODULE = "module"
    SILENT_MODULE = "silent module"     # `-type`: load errors are not logged
    MUST_FAIL = "must fail"             # a broken line: always PAM_PERM_DENIED
    SUBSTACK = "substack"               # marks a substack's start; never called


@dataclass(frozen=True)
class Via:
    """One step of the way to a line: the `include`/`substack`/`@include` line that
    pulled its file in."""

    file: str
    line: int
    how: str          # "include", "substack" or "@include"
    target: str       # the name as written


@dataclass(frozen=True)
class Handler:
    """One entry of a handler list (one pam.d line, or a marker for a substack)."""

    ident: int                      # position in load order: keys the frozen chain
    kind: Kind
    level: int                      # substack depth (libpam's stack_level)
    type: str                       # auth, account, session or password
    actions: tuple[int, ...]        # index = return code
    file: str                       # the pam.d file as libpam opened it
    line: int                       # physical line where the pam.d line starts
    control: str                    # the control field as written ("" if missing)
    module: str | None              # the module field as written (None if missing)
    path: str | None                # what libpam dlopens (None: not a module line)
    args: tuple[str, ...] = ()
    symbols: frozenset[str] | None = None   # pam_sm_* it exports; None: cannot load
    problem: str | None = None      # why libpam made it a must-fail (or failed to load)
    via: tuple[Via, ...] = ()
    other: bool = False             # from the `other` service

    @property
    def name(self) -> str:
        """The module's file name (`pam_unix.so`), or the substack/include target."""
        if self.module is None:
            return "<none>"
        return self.module.rsplit("/", 1)[-1]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def calls(self, function: str) -> bool:
        """Whether libpam would reach the module's code for this pam_sm_* function."""
        return (self.kind in (Kind.MODULE, Kind.SILENT_MODULE)
                and self.symbols is not None and function in self.symbols)


@dataclass(frozen=True)
class Note:
    """Something libpam logs (and usually works around) while loading."""

    file: str
    line: int
    message: str


@dataclass(frozen=True)
class StartFailure:
    """libpam cannot load the configuration: pam_start returns `code`, or (`fatal`)
    libpam does not return sanely: "crash" (a NULL pointer), "hang" (an endless read
    loop), "undefined" (it uses uninitialised memory) or "loop" (endless include
    recursion: file-descriptor exhaustion or a stack overflow, depending on limits)."""

    code: int
    file: str
    line: int
    message: str
    fatal: str | None = None


@dataclass
class Stack:
    """The loaded configuration of one service."""

    service: str
    confdir: str | None
    conf: dict[str, list[Handler]] = field(default_factory=lambda: {t: [] for t in TYPES})
    other: dict[str, list[Handler]] = field(default_factory=lambda: {t: [] for t in TYPES})
    failure: StartFailure | None = None
    notes: list[Note] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def chain(self, type_: str) -> list[Handler]:
        """The list libpam dispatches for a type: the service's, else `other`'s."""
        return self.conf[type_] or self.other[type_]

    def all_handlers(self) -> list[Handler]:
        return [h for lists in (self.conf, self.other) for t in TYPES for h in lists[t]]
