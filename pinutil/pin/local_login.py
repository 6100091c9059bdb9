"""The PIN login's backends without the service (pinutil.pin.login has the service's
and the choice between them): the status, then the prompt and the check, each a
question of its own.

- `DirectBackend` talks to the TPM from a short-lived forked child of this process
  (fast; only for processes whose environment is their own and that may open the TPM),
  killed when the login's TPM budget runs out (`deadline.py`): neither tcti-swtpm nor
  the synchronous Esys calls bound a hung TPM (see tpm.py), and this process never
  holds a TPM fd nor has its environment changed;
- `HelperBackend` runs the set-gid `pinutil` launcher with an empty environment, the
  PIN on stdin and what is left of the same budget as its timeout (sudo/su, where the
  caller owns the environment, and screen lockers running as the user, who may not
  open the TPM).

Both report an enrolled index as enrolled only if its enrolment record names this
account (`pinutil.pin.enrolment`); otherwise `EnrolmentMismatch`, before any PIN prompt.
The helper's errors come back through `errors.from_json`: pinutil's JSON `result`
token names the class (pinutil/errors.py), an unknown one is TpmUnavailable.
"""
from __future__ import annotations

import os

from pinutil import errors
from pinutil.deadline import TpmBudget, run_in_child, spend
from pinutil.pin.policy import Policy
from pinutil.pin.prompt import prompt_text
from pinutil.pin.status import NOT_ENROLLED, PinStatus
from pinutil.record import Record
from pinutil.users import User, may_test

_MAX_HELPER_OUTPUT = 64 * 1024


def tpm_reachable(tcti: str) -> bool:
    """Whether this process may open the TPM named by a device: or swtpm: TCTI."""
    name, _, conf = tcti.partition(":")
    if name == "device":
        path = conf or "/dev/tpmrm0"
    elif name == "swtpm":
        path = dict(p.partition("=")[::2] for p in conf.split(",")).get("path", "")
        if not path:
            return True  # host/port form: nothing to check locally
    else:
        return True
    return os.access(path, os.R_OK | os.W_OK, effective_ids=True)


class _LocalLogin:
    """The login of the backends without the service: the status, then the prompt and
    the check, each a question of its own (`status` and `check`, in the subclasses)."""

    def __init__(self, on_behalf_of: int | None) -> None:
        self.on_behalf_of = on_behalf_of  # the uid a root host acts for (requester.py)

    def login(self, name: str, read_pin) -> None:
        import pwd

        try:
            user = User(name, pwd.getpwnam(name).pw_uid)
        except KeyError:
            raise errors.UnknownUser("unknown user") from None
        if self.on_behalf_of is not None:
            # A root host that serves a client on its stdin (polkit 127's agent helper)
            # acts for that client's uid: another user's PIN is never prompted for.
            try:
                may_test(User(f"uid {self.on_behalf_of}", self.on_behalf_of), user)
            except errors.PermissionDenied:
                raise errors.PinNotOffered(
                    f"this root host acts for uid {self.on_behalf_of} (the peer of its "
                    f"standard input), not for {name}: no PIN offered") from None
        status = self.status(user)
        if not status.enrolled:
            raise errors.NotEnrolled("no PIN enrolled")
        if status.locked:
            raise errors.PinLocked("the PIN is locked: too many wrong PINs")
        pin = read_pin(prompt_text(status.failures, status.attempts_left))
        try:
            self.check(user, bytes(pin))
        finally:
            pin[:] = bytes(len(pin))


class DirectBackend(_LocalLogin):
    """The TPM, opened for each call in a forked child (see deadline.py)."""

    name = "direct"

    def __init__(self, policy: Policy, budget: TpmBudget,
                 on_behalf_of: int | None = None) -> None:
        import pinutil.tpm.context  # noqa: F401 - imported once here, not in every child

        super().__init__(on_behalf_of)
        self.policy = policy
        self.budget = budget
        self.lookups: dict = {}  # uid -> slots.Lookup: one record read per login

    def _lookup(self, user: User):
        """Where the user's PIN is (the handle their record names: pin/slots.py), read in
        this process before a child is forked, so the child reads nothing."""
        from pinutil.pin import slots

        return slots.lookup(self.lookups, self.policy, user.name, user.uid)

    def _handle(self, user: User) -> int:
        return self._lookup(user).handle

    def _index(self, tpm, user: User, salt_key_name=None):
        from pinutil.pin.index import PinIndex

        return PinIndex(tpm, self._handle(user), salt_key_name)

    def _open(self):
        from pinutil import owner_auth
        from pinutil.tpm.context import Tpm

        # Read in the child, at the first owner command: the host never holds it.
        return Tpm(self.policy.tcti,
                   owner_auth=owner_auth.loader(self.policy.owner_auth_file))

    # The two functions below run in the child; what they return crosses a pipe.
    def _status(self, user: User) -> dict:
        with self._open() as tpm:
            return self._index(tpm, user).status().as_dict()

    def _check(self, user: User, pin: bytes) -> bool:
        from pinutil.pin import salt_key

        path = self.policy.salt_key_record
        with self._open() as tpm:
            self._index(tpm, user, lambda: salt_key.load(path)).check(
                pin, salted=self.policy.salted)
        return True

    def status(self, user: User) -> PinStatus:
        lookup = self._lookup(user)
        fields = run_in_child(self.budget, self._status, user)
        if not isinstance(fields, dict):
            raise errors.TpmUnavailable("the TPM worker gave no usable status")
        status = PinStatus(**fields)
        if status.enrolled:  # a file check, done here: no TPM involved
            lookup.verified()
        return status

    def check(self, user: User, pin: bytes) -> None:
        self._lookup(user)
        # Exactly True, not merely "no exception": a worker that returned anything
        # else did not see the TPM accept the PIN.
        if run_in_child(self.budget, self._check, user, pin) is not True:
            raise errors.TpmUnavailable("the TPM worker gave no usable answer")


class HelperReply(Record):
    """What `pinutil` answered: its exit status and its JSON line."""

    __slots__ = _FIELDS = ("exit_code", "fields")
    exit_code: int
    fields: dict


class HelperBackend(_LocalLogin):
    """`pinutil` in a child process: empty environment, PIN on stdin, bounded time."""

    name = "helper"

    def __init__(self, policy: Policy, budget: TpmBudget, policy_path: str | None = None,
                 on_behalf_of: int | None = None) -> None:
        super().__init__(on_behalf_of)
        self.policy = policy
        self.budget = budget
        # --policy is honoured by pinutil for root only; others get its built-in path.
        self.policy_args = ["--policy", policy_path] if policy_path and os.getuid() == 0 else []

    def _run(self, command: str, user: User, stdin: bytes) -> HelperReply:
        # "--": a user name can never be taken for an option.
        argv = [self.policy.pinutil_path, *self.policy_args, "--json", "--stdin",
                command, "--", user.name]
        done = spend(self.budget, _run_pinutil, argv, stdin)
        return helper_reply(done.returncode, done.stdout)

    def status(self, user: User) -> PinStatus:
        return pin_status_from(self._run("status", user, b""))

    def check(self, user: User, pin: bytes) -> None:
        raise_for_check(self._run("test", user, pin + b"\n"))


def helper_reply(exit_code: int, stdout: bytes) -> HelperReply:
    """The helper's exit status and its last JSON line; TpmUnavailable if it has none."""
    import json

    try:
        fields = json.loads(stdout[:_MAX_HELPER_OUTPUT].decode().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError, RecursionError):
        fields = None
    if not isinstance(fields, dict):
        raise errors.TpmUnavailable(f"pinutil gave no usable answer (exit {exit_code})")
    return HelperReply(exit_code, fields)


def pin_status_from(reply: HelperReply) -> PinStatus:
    """What `pinutil status` answered; TpmUnavailable when a field is missing or has
    the wrong type (never a Python error out of the helper's output)."""
    f = reply.fields
    if reply.exit_code != 0 or f.get("result") != "success":
        raise errors.from_json(f)
    if not f.get("enrolled"):
        return NOT_ENROLLED
    if f.get("record") != "ok":  # absent (an older pinutil) is a mismatch too
        raise errors.EnrolmentMismatch(str(f.get("record_problem", "no enrolment record"))[:300])
    numbers = [f.get(name) for name in ("failures", "limit", "attempts_left")]
    if not all(type(n) is int and n >= 0 for n in numbers) or type(f.get("locked")) is not bool:
        raise errors.TpmUnavailable("pinutil gave an unusable status")
    failures, limit, attempts_left = numbers
    return PinStatus(enrolled=True, failures=failures, limit=limit, locked=f["locked"],
                     attempts_left=attempts_left)


def raise_for_check(reply: HelperReply) -> None:
    """Return only if `pinutil test` said the PIN is right."""
    # Success needs BOTH the exit status and the JSON line: with SIGCHLD ignored by
    # the host, a child's exit status reads as 0 whatever it was.
    if reply.exit_code == 0 and reply.fields.get("result") == "success":
        return
    raise errors.from_json(reply.fields)


def _run_pinutil(timeout: float, argv: list[str], stdin: bytes):
    import subprocess

    try:
        return subprocess.run(argv, input=stdin, env={}, stdout=subprocess.PIPE, check=False,
                              stderr=subprocess.DEVNULL, close_fds=True, cwd="/",
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise errors.TpmUnavailable(f"pinutil did not answer within {timeout:.3g} s") from None
    except OSError as e:
        raise errors.TpmUnavailable(f"cannot run pinutil: {e.strerror}") from None
