"""The `pinutil` command: enrol, change, delete, inspect and test TPM-backed PINs.

    pinutil [--policy PATH] [--json] [--stdin] [--yes] [-v] [-m]
            {setup,change,delete,status,test} [USER]
    pinutil [--policy PATH] [--json] [-v] master-key ...

The full manual is `docs/pinutil.md`. In short:

- The caller is the real uid (the installed command is setgid `tss`); the rules are in
  `pinutil.users` and are checked before any TPM command. `--policy` is root-only.
- PINs are read from /dev/tty with echo off (setup and change ask twice), or with
  `--stdin` one per line from standard input (change: old PIN first unless root).
  `-m` (pinpam's machine mode) means `--json --stdin`.
- A non-root `setup` first proves the account password through the PAM service
  `pinutil` (`pinutil.pin.password_proof`); its prompts are answered the same way (with
  `--stdin`: one line per prompt, before the PIN). Every setup, change, delete and
  adopt is logged to syslog (LOG_AUTHPRIV): who, for whom, the result.
- Every PIN is checked against the policy before any TPM command.
- Output: one human line on stdout, or with `--json` one JSON object per run on
  stdout. `test` always prints its JSON line. Errors: one line on stderr (and the
  JSON object with `"result"` set to the error token when JSON is on).

Exit codes (`ExitCode`, values from `pinutil.errors`, where each domain error declares
its exit code, JSON token and PAM result; 6, 7, 9, 10, 11 are the PAM codes of the same
meaning, so `pinutil test`'s status is the PAM result of the check):

    0  OK                 success (status: also when no PIN is enrolled)
    1  ERROR              unexpected or master-key failure
    2  USAGE              bad command line
    3  POLICY_ERROR       the policy file is unusable
    4  TPM_UNSUPPORTED    the TPM lacks a needed feature (e.g. PolicyNvWritten)
    5  CANCELLED          confirmation declined, no terminal, no input, Ctrl-C
    6  PERMISSION_DENIED  the caller may not do this (PAM_PERM_DENIED)
    7  PIN_REFUSED        wrong PIN, a PIN that breaks the policy, the two entries
                          differ, or setup's password was refused (PAM_AUTH_ERR);
                          JSON `result` tells which
    9  UNAVAILABLE        TPM unreachable, no PIN enrolled, or no enrolment record
                          naming this account (PAM_AUTHINFO_UNAVAIL)
   10  UNKNOWN_USER       no such user (PAM_USER_UNKNOWN)
   11  LOCKED             the PIN is locked: too many failures (PAM_MAXTRIES)
   12  ALREADY_ENROLLED   setup for a user who already has a PIN

Seams: `main(argv, policy_path=..., pam_confdir=...)` takes the default policy path and
the PAM configuration directory of the password proof as keyword arguments, not from
argv or the environment: the native launcher passes its build-time policy path and
leaves `pam_confdir` at /etc/pam.d, tests pass theirs, and a caller of the installed
command can change neither.

The master-key commands live in `pinutil.cli.master_key`: its
`add_parser(subparsers)` adds a `master-key` parser whose leaf parsers call
`set_defaults(handler=fn)`, with `fn(ctx: Context) -> dict` returning the JSON fields
of the result (a `"message"` key is the human line) and raising `PinutilError`s. This
module checks that the caller is root before any handler runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import termios
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from pinutil import audit, errors, users
from pinutil.cli import via_service
from pinutil.cli.options import add_common_options
from pinutil.cli.safe_text import safe_text
from pinutil.errors import (
    Cancelled,
    EnrolmentMismatch,
    InvalidPin,
    NotEnrolled,
    PermissionDenied,
    PinutilError,
    one_line,
)
from pinutil.pin import enrolment, lifecycle
from pinutil.pin.password_proof import PAM_CONFDIR, wipe
from pinutil.pin.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from pinutil.setid import running_setid

PROG = "pinutil"
MAX_LINE_BYTES = 1024  # a PIN line longer than this is refused without reading on


class ExitCode(IntEnum):
    """Exit status of `pinutil` (see the module docstring and docs/pinutil.md). The
    values come from pinutil.errors, where each domain error declares its own."""

    OK = errors.EXIT_OK
    ERROR = errors.EXIT_ERROR
    USAGE = errors.EXIT_USAGE
    POLICY_ERROR = errors.EXIT_POLICY_ERROR
    TPM_UNSUPPORTED = errors.EXIT_TPM_UNSUPPORTED
    CANCELLED = errors.EXIT_CANCELLED
    PERMISSION_DENIED = errors.EXIT_PERMISSION_DENIED
    PIN_REFUSED = errors.EXIT_PIN_REFUSED
    UNAVAILABLE = errors.EXIT_UNAVAILABLE
    UNKNOWN_USER = errors.EXIT_UNKNOWN_USER
    LOCKED = errors.EXIT_LOCKED
    ALREADY_ENROLLED = errors.EXIT_ALREADY_ENROLLED


# --- reading PINs -------------------------------------------------------------------

def _decode_pin(line: bytearray) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPin("PIN is not valid UTF-8") from None
    finally:
        wipe(line)


class _LineSource:
    """Bounded line reads from a file descriptor: never buffers more than one chunk
    beyond a line, and refuses a line over MAX_LINE_BYTES without reading its rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # bytearrays throughout (read with readv, never os.read's bytes): a secret can
        # be wiped once used.
        self.pending = bytearray()
        self.eof = False

    def readline(self) -> bytearray | None:
        """One line without its trailing newline; None at end of input."""
        chunk = bytearray(4096)
        try:
            while b"\n" not in self.pending and not self.eof:
                if len(self.pending) > MAX_LINE_BYTES:
                    break
                try:
                    count = os.readv(self.fd, [chunk])
                except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                    continue
                except OSError as e:
                    raise Cancelled(f"cannot read the PIN: {e.strerror}") from None
                if not count:
                    self.eof = True
                self.pending += memoryview(chunk)[:count]
        finally:
            wipe(chunk)
        end = self.pending.find(b"\n")
        line = self.pending[:end] if end >= 0 else self.pending[:]
        rest = self.pending[end + 1:] if end >= 0 else bytearray()
        wipe(self.pending)
        self.pending = rest
        if len(line) > MAX_LINE_BYTES:
            wipe(line)
            wipe(self.pending)
            self.pending = bytearray()
            raise InvalidPin(f"PIN is too long (input line over {MAX_LINE_BYTES} bytes)")
        if end < 0 and not line and self.eof:
            return None
        return line


class StdinPrompter:
    """`--stdin`: one answer per line on standard input, no prompts."""

    interactive = False

    def __init__(self, fd: int = 0) -> None:
        self.source = _LineSource(fd)

    def _line(self, what: str) -> bytearray:
        line = self.source.readline()
        if line is None:
            raise Cancelled(f"no {what} on standard input")
        return line

    def secret(self, prompt: str) -> str:
        return _decode_pin(self._line("PIN"))

    def answer(self, prompt: str, echo: bool) -> bytearray:
        """One answer to a PAM prompt (the caller wipes it)."""
        return self._line("password")

    def show(self, text: str) -> None:
        print(f"{PROG}: {safe_text(text)}", file=sys.stderr)

    def confirm(self, question: str) -> bool:
        answer = self._line("answer").strip().lower()
        return answer in (b"y", b"yes")


class TtyPrompter:
    """Interactive: prompts and answers on /dev/tty (never stdin/stdout), echo off
    for secrets; the terminal settings are restored whatever happens."""

    interactive = True

    def __init__(self) -> None:
        self.fd: int | None = None

    def _tty(self) -> int:
        if self.fd is None:
            try:
                self.fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                raise Cancelled("no terminal to ask on: use --stdin") from None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _ask(self, prompt: str, echo: bool) -> bytearray:
        fd = self._tty()
        try:
            old = termios.tcgetattr(fd)
        except termios.error:
            raise Cancelled("no terminal to ask on: use --stdin") from None
        new = list(old)
        if not echo:
            new[3] &= ~termios.ECHO
        try:
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
            os.write(fd, safe_text(prompt).encode())  # a PAM module's or pinutild's
            line = _LineSource(fd).readline()
        finally:
            # TCSAFLUSH also discards what is left of an over-long line.
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            if not echo:
                os.write(fd, b"\n")
        if line is None:
            raise Cancelled("no input")
        return line

    def secret(self, prompt: str) -> str:
        return _decode_pin(self._ask(prompt, echo=False))

    def answer(self, prompt: str, echo: bool) -> bytearray:
        """One answer to a PAM prompt (the caller wipes it)."""
        return self._ask(prompt, echo=echo)

    def show(self, text: str) -> None:
        os.write(self._tty(), (safe_text(text) + "\n").encode())

    def confirm(self, question: str) -> bool:
        return self._ask(question, echo=True).strip().lower() in (b"y", b"yes")


# --- command context ----------------------------------------------------------------

@dataclass
class Context:
    """What a command handler gets: parsed arguments, the caller, the policy, the way
    to ask for PINs, and the verbose flag."""

    args: argparse.Namespace
    caller: users.User
    policy: Policy
    policy_path: str
    prompter: StdinPrompter | TtyPrompter
    verbose: bool = False
    target: users.User | None = field(default=None)
    pam_confdir: str = PAM_CONFDIR
    audited_by_service: bool = False  # pinutild wrote the audit line (cli/via_service.py)

    def note(self, text: str) -> None:
        """A diagnostic line on stderr with -v (never a secret)."""
        if self.verbose:
            print(f"{PROG}: {text}", file=sys.stderr)

    def pin(self, prompt: str = "PIN: ") -> bytes:
        """Ask for an existing PIN once and check it against the policy."""
        return self.policy.check_pin(self.prompter.secret(prompt))

    def new_pin(self, prompt: str = "New PIN: ") -> bytes:
        """Ask for a new PIN (twice when interactive) and check it against the policy."""
        pin = self.policy.check_pin(self.prompter.secret(prompt))
        if self.prompter.interactive:
            again = self.prompter.secret("Repeat the PIN: ").encode("utf-8", "replace")
            if again != pin:
                raise InvalidPin("the two PINs differ")
        return pin

    def prove_password(self, user: users.User) -> None:
        """The enrolment proof: PAM service `pinutil` must accept `user`'s password.
        Nothing is asked when the service file is missing (a clear error instead)."""
        from pinutil.pin.password_proof import (
            PAM_ERROR_MSG,
            PAM_TEXT_INFO,
            prove_password,
        )

        def ask(text: str, echo: bool, style: int) -> bytearray | None:
            if style in (PAM_ERROR_MSG, PAM_TEXT_INFO):
                self.prompter.show(text)
                return None
            return self.prompter.answer(text, echo)

        prove_password(user.name, ask, self.pam_confdir)
        self.note(f"password of {user.name} accepted by the PAM service pinutil")

    def handle(self, user: users.User) -> int:
        """The handle the user's PIN is at: the one their record names (pin/slots.py)."""
        from pinutil.pin import slots

        return slots.current(self.policy.enrolment_dir, user.uid, self.policy.nv_base)

    def open_tpm(self):
        """The policy's TPM, its owner password read from the policy's owner_auth_file
        at the first owner-hierarchy command (pinutil/owner_auth.py)."""
        from pinutil import owner_auth
        from pinutil.tpm.context import Tpm

        return Tpm(self.policy.tcti, timeout_ms=int(self.policy.helper_timeout * 1000),
                   owner_auth=owner_auth.loader(self.policy.owner_auth_file))

    @contextlib.contextmanager
    def pin_index(self, user: users.User) -> Iterator[object]:
        """The user's PinIndex on an open TPM; the handle is computed (and
        range-checked) before the TPM is opened. A salted check or enrolment loads
        the recorded salt key when it needs it (cli/salt_key.py)."""
        from pinutil.pin.index import PinIndex  # TPM code is imported only when needed

        handle = self.handle(user)
        self.note(f"tcti {self.policy.tcti}, PIN index {handle:#010x} for {user.name}")
        with self.open_tpm() as tpm:
            def salt_key_name() -> bytes:
                from pinutil.cli.salt_key import recorded_salt_key_name

                return recorded_salt_key_name(self, tpm)

            yield PinIndex(tpm, handle, salt_key_name=salt_key_name)


# --- commands -------------------------------------------------------------------------

def _current_status(ctx: Context, user: users.User):
    """The index's state, read as owner (no PIN, no attempt), in its own TPM connection:
    nothing of the TPM stays open while the user is asked."""
    with ctx.pin_index(user) as index:
        return index.status()


def _require_recorded(ctx: Context, user: users.User) -> None:
    """EnrolmentMismatch unless the enrolment record names `user`. `test` and a user's
    `change` send a PIN only to an index recorded as theirs: otherwise the new owner of
    a reused uid, knowing the old owner's PIN, would `change` it into a PIN login of
    their own without the account password. `delete` may (with the PIN): afterwards a
    new PIN still needs the password, and a renamed account or a pinpam index can be
    cleared by its owner without root."""
    enrolment.verify(ctx.policy.enrolment_dir, user.name, user.uid, ctx.handle(user),
                     ctx.policy.salt_key_record)


def cmd_setup(ctx: Context) -> dict:
    user = ctx.target
    users.may_setup(ctx.caller, user)
    lifecycle.check_writable(ctx.policy)
    # A person at a terminal learns it before typing a password and a PIN twice (an
    # owner read: no attempt spent). With --stdin the input is all there already, and
    # is checked before the TPM is asked anything.
    if ctx.prompter.interactive and _current_status(ctx, user).enrolled:
        raise lifecycle.already_enrolled(ctx.caller, user)
    if users.setup_needs_password(ctx.caller):
        ctx.prove_password(user)
    pin = ctx.new_pin()
    with ctx.pin_index(user) as index:
        fields = lifecycle.setup(index, ctx.policy, ctx.caller, user, pin)
    return lifecycle.setup_result(user.name, fields)


def cmd_change(ctx: Context) -> dict:
    user = ctx.target
    users.may_change(ctx.caller, user)
    old = ctx.pin("Current PIN: ") if users.change_needs_old_pin(ctx.caller) else None
    new = ctx.new_pin()
    with ctx.pin_index(user) as index:
        fields = lifecycle.change(index, ctx.policy, ctx.caller, user, old, new)
    return {**fields, "message": f"PIN changed for {user.name}"}


def cmd_delete(ctx: Context) -> dict:
    user = ctx.target
    users.may_delete(ctx.caller, user)
    st = _current_status(ctx, user)
    if not st.enrolled and not st.half_finished:
        enrolment.remove(ctx.policy.enrolment_dir, user.uid)  # a stale record, if any
        raise NotEnrolled(f"{user.name} has no PIN enrolled")
    # A half-finished index holds no PIN: its owner deletes it without one.
    pin = ctx.pin() if st.enrolled and users.delete_needs_pin(ctx.caller) else None
    if (users.delete_needs_confirmation(ctx.caller) and not ctx.args.yes
            and not ctx.prompter.confirm(f"Delete the PIN of {user.name}? [y/N] ")):
        raise Cancelled("not deleted")
    with ctx.pin_index(user) as index:
        what = lifecycle.delete(index, ctx.policy, ctx.caller, user, pin)["what"]
    return {"message": f"{what} deleted for {user.name}"}


def _record_fields(ctx: Context, user: users.User) -> tuple[dict, str]:
    """The enrolment record for status: JSON fields and a phrase for the message."""
    try:
        record = enrolment.verify(ctx.policy.enrolment_dir, user.name, user.uid,
                                  ctx.handle(user), ctx.policy.salt_key_record)
    except EnrolmentMismatch as e:
        return {"record": "mismatch", "record_problem": one_line(str(e))}, (
            f"; no PIN login: {one_line(str(e))}")
    return {"record": "ok", "enrolled_by": record.as_json()}, (
        f"; enrolled for {record.describe()}")


def cmd_status(ctx: Context) -> dict:
    user = ctx.target
    users.may_status(ctx.caller, user)
    from pinutil.cli.owner import describe, owner_state

    with ctx.pin_index(user) as index:
        st = index.status()
        owner = owner_state(ctx, index.tpm)
    # Without a PIN there is no counter: null, not a made-up 0.
    known = bool(st.enrolled)
    fields = {"enrolled": known, "failures": st.failures if known else None,
              "limit": st.limit if known else None, "locked": bool(st.locked),
              "attempts_left": st.attempts_left if known else None}
    if st.half_finished:
        fields["half_finished"] = True
    if getattr(st, "detail", ""):
        fields["detail"] = one_line(st.detail)
    record_text = ""
    if known:
        record_fields, record_text = _record_fields(ctx, user)
        fields.update(record_fields)
    if not st.enrolled:
        message = f"{user.name}: no PIN enrolled" + (
            f" ({fields['detail']})" if "detail" in fields else "")
    elif st.locked:
        message = f"{user.name}: PIN locked ({st.failures} of {st.limit} attempts failed)"
    else:
        message = (f"{user.name}: PIN enrolled, {st.failures} of {st.limit} attempts failed, "
                   f"{st.attempts_left} attempts left")
    reach_text = ""
    if ctx.caller.is_root:  # root's view of the system: who else reaches the TPM
        from pinutil.cli import tpm_reach

        fields["tpm_reachable_past_pinutild"] = reach = tpm_reach.warnings()
        reach_text = "".join(f"; WARNING: {line}" for line in reach)
    return {**fields, "owner_hierarchy": owner,
            "message": f"{message}{record_text}; {describe(owner)}{reach_text}"}


def cmd_test(ctx: Context) -> dict:
    user = ctx.target
    users.may_test(ctx.caller, user)  # before any TPM command: no lock-out of others
    pin = ctx.pin()
    with ctx.pin_index(user) as index:
        if index.status().enrolled:  # no PIN goes to an index not recorded as theirs
            _require_recorded(ctx, user)
        index.check(pin, salted=ctx.policy.salted)
        try:
            left = index.status().attempts_left
        except PinutilError:
            left = None  # the check succeeded; the count is only informative
    return {"attempts_left": left, "message": f"PIN correct for {user.name}"}


def cmd_adopt(ctx: Context) -> dict:
    """Root vouches that the written index at nv_base + uid is USER's (one enrolled by
    pinpam or before enrolment records): writes the record."""
    user = ctx.target
    users.may_adopt(ctx.caller)
    with ctx.pin_index(user) as index:
        lifecycle.require_written(index, user)
    record = lifecycle.write_record(ctx.policy, user, ctx.handle(user),
                                    lifecycle.recorded_salt_key(ctx.policy))
    return {"enrolled_by": record.as_json(),
            "message": f"PIN index 0x{record.nv_index:08x} recorded as {user.name}'s"}


_PIN_COMMANDS: dict[str, tuple[Callable[[Context], dict], str]] = {
    "setup": (cmd_setup, "enrol a PIN (root, or for yourself)"),
    "change": (cmd_change, "change a PIN (yours needs the old PIN; root needs none)"),
    "delete": (cmd_delete, "delete a PIN (yours needs the PIN; root confirms)"),
    "status": (cmd_status, "show enrolment, failures and the limit"),
    "test": (cmd_test, "check a PIN; exits with the PAM code of the result"),
    "adopt": (cmd_adopt, "root: record an existing PIN index (e.g. pinpam's) as USER's"),
}


# --- argument parsing -------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code USAGE
        self.print_usage(sys.stderr)
        print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
        raise SystemExit(ExitCode.USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Manage TPM-backed login PINs.",
                     allow_abbrev=False)
    add_common_options(parser, on_command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (handler, help_text) in _PIN_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, allow_abbrev=False)
        add_common_options(p, on_command=True)
        p.add_argument("user", nargs="?", metavar="USER",
                       help="user name or uid (default: you)")
        p.set_defaults(handler=handler)
    from pinutil.cli import master_key as cli_master_key
    from pinutil.cli import owner as cli_owner
    from pinutil.cli import salt_key as cli_salt_key
    from pinutil.cli import state as cli_state
    cli_master_key.add_parser(sub)
    cli_salt_key.add_parser(sub)
    cli_owner.add_parser(sub)
    cli_state.add_parser(sub)
    return parser


# --- entry point ----------------------------------------------------------------------

def _scrub_environment_if_setid() -> None:
    """Under set-id, a caller's TSS2_* variables must never reach libtss2 (TSS2_LOGFILE
    is a file write as the tss group). The launcher already clears the environment;
    this is the second line."""
    if running_setid():
        for name in [k for k in os.environ if k.startswith("TSS2_")]:
            del os.environ[name]


def error_fields(error: PinutilError, command: str) -> dict:
    """The JSON fields of a failed command: the error's own (pinutil.errors), and for
    `test` always `attempts_left` (null when the error does not say)."""
    fields = error.json_fields()
    if command == "test":
        fields.setdefault("attempts_left", None)
    return fields


def _emit_json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None, *, policy_path: str = DEFAULT_POLICY_PATH,
         pam_confdir: str = PAM_CONFDIR) -> int:
    """Run `pinutil` with `argv` (the arguments after the program name; default
    `sys.argv[1:]`) and return the exit code. `policy_path` is the policy used when
    `--policy` is not given (a build-time setting of the launcher, not the caller's);
    `pam_confdir` holds the `pinutil` PAM service of the password proof."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else ExitCode.USAGE
    if args.machine:
        args.json = args.stdin = True
    command = args.command
    as_json = args.json or command == "test"
    result: dict = {"command": command, "user": getattr(args, "user", None)}
    prompter: StdinPrompter | TtyPrompter = StdinPrompter() if args.stdin else TtyPrompter()
    caller = ctx = None
    outcome = "error"
    try:
        _scrub_environment_if_setid()
        caller = users.current_caller()
        if args.policy is not None:
            users.may_choose_policy(caller)
        if command == "master-key":
            users.may_manage_master_key(caller)
        if command == "salt-key" and not caller.is_root:  # before any TPM command
            raise PermissionDenied("only root may record or inspect the salt key")
        if command == "owner" and not caller.is_root:
            raise PermissionDenied("only root may protect or release the TPM owner hierarchy")
        path = args.policy if args.policy is not None else policy_path
        ctx = Context(args=args, caller=caller, policy=load_policy(path),
                      policy_path=path, prompter=prompter, verbose=args.verbose,
                      pam_confdir=pam_confdir)
        if hasattr(args, "user"):
            ctx.target = users.resolve_target(args.user, caller)
            result["user"] = ctx.target.name
        handler = args.handler
        if command in via_service.COMMANDS and via_service.applies(ctx):
            handler = via_service.COMMANDS[command]
            ctx.note(f"through pinutild at {ctx.policy.service_socket}")
        fields = handler(ctx)
        message = fields.pop("message", None)
        outcome = "success"
        result.update({"result": "success", **fields})
        if as_json:
            _emit_json(result)
        elif message:
            print(message)
            if fields.get("owner_warning"):  # pinutil's own words (pin/lifecycle.py)
                print(f"{PROG}: WARNING: {fields['owner_warning']}", file=sys.stderr)
        return ExitCode.OK
    except PinutilError as e:  # its class says the token, exit code and JSON fields
        outcome = e.token
        # pinutild's error text among them (capped at 300 by errors.from_json).
        print(f"{PROG}: {safe_text(one_line(e), limit=None)}", file=sys.stderr)
        if as_json:
            result.update(error_fields(e, command))
            _emit_json(result)
        return e.exit_code
    except KeyboardInterrupt:
        outcome = "cancelled"
        print(f"{PROG}: cancelled", file=sys.stderr)
        if as_json:
            result.update({"result": "cancelled", "error": "cancelled"})
            _emit_json(result)
        return ExitCode.CANCELLED
    except Exception as e:  # noqa: BLE001 - a bug: one line, details only with -v
        print(f"{PROG}: internal error ({type(e).__name__}); run with -v for details",
              file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        if as_json:
            result.update({"result": "error", "error": f"internal error ({type(e).__name__})"})
            _emit_json(result)
        return ExitCode.ERROR
    finally:
        if isinstance(prompter, TtyPrompter):
            prompter.close()
        if ctx is None or not ctx.audited_by_service:
            audit.log(command, caller, ctx.target if ctx is not None else None,
                      getattr(args, "user", None), outcome, os.getuid())
