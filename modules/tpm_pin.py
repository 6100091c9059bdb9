"""tpm_pin: log in with a PIN that the TPM protects with its own failure counter.

    auth sufficient pam_pypam.so module=tpm_pin [policy=PATH] [try_first_pass]
                                 [use_first_pass] [backend=auto|direct|helper|daemon]
                                 [allow_remote] [debug]

A thin adapter: PAM in, a call into pinutil's core, a PAM code out. Every failure is
a domain error of pinutil.errors, whose class gives the PAM code, the syslog priority
and what the user sees (`_finish`); any unexpected exception becomes PAM_SERVICE_ERR
in pypam's dispatcher, so no error path can end in PAM_SUCCESS. See docs/pam_tpm_pin.md.
"""
import syslog

import pypam
from pinutil import errors
from pinutil.deadline import login_budget
from pinutil.pin.login import BACKENDS, choose_backend
from pinutil.pin.policy import DEFAULT_POLICY_PATH, load_policy
from pinutil.service.requester import stdin_requester
from pypam.arguments import (
    ArgumentError,
    Arguments,
    Option,
    Switch,
    absolute_path,
    choice,
)

# The pam.d line (pypam's one parser: unknown arguments are logged and ignored, a known
# one in the wrong shape or given twice is a configuration error).
ARGUMENTS = Arguments(
    Option("policy", absolute_path),
    Option("backend", choice(*BACKENDS), default="auto"),
    Switch("try_first_pass"),
    Switch("use_first_pass"),
    Switch("allow_remote"),
    Switch("debug"),
)

# pamh.data key: set just before a PIN goes to the TPM (or to pinutild, which sends it
# there). A host that retries pam_authenticate on one handle (sudo: 3 times) gets no
# second PIN attempt.
PIN_SENT = "pin_sent"


def _is_remote(rhost):
    """Whether the login names a remote host: any PAM_RHOST but none or empty.

    Loopback included (127.0.0.0/8, ::1, `localhost`): the programs that set PAM_RHOST
    are network services (sshd, xrdp, cockpit, telnetd), and a loopback connection to
    them is made by any local process, or forwarded from elsewhere (ssh -L, a reverse
    proxy). The service then authenticates an account that another user chose, as
    root: each connection would spend one of that account's attempts. Console logins,
    su, sudo, display managers and screen lockers set no PAM_RHOST."""
    return bool(rhost)


def _refuse_if_not_offered(pamh, options):
    """No PIN prompt for a remote login without allow_remote, nor twice on one handle."""
    rhost = pamh.rhost
    if not options.get("allow_remote") and _is_remote(rhost):
        raise errors.PinNotOffered(f"remote login from {rhost[:64]!r}: no PIN offered "
                            "(the pam.d line has no allow_remote)")
    if pamh.data.get(PIN_SENT):
        raise errors.PinNotOffered("one PIN attempt per PAM transaction: already spent on this "
                            "handle, no PIN offered again")


def _options(pamh, args):
    """The pam.d arguments; a malformed one fails closed as a configuration error."""
    try:
        return ARGUMENTS.parse(args, warn=lambda text: pamh.syslog(syslog.LOG_WARNING, text))
    except ArgumentError as e:
        raise errors.PolicyError(f"pam.d line: {e}") from None


def _read_pin(pamh, options, policy, prompt):
    """The PIN as a bytearray valid under the policy, asked for with `prompt` (the
    backend's, from the status) unless try/use_first_pass found one; raises InvalidPin
    before any TPM use, PinSkipped for an empty answer (Enter: the user chose the
    password). PIN_SENT is set as the PIN is handed out: the backend sends it next."""
    pin = None
    if options.get("use_first_pass") or options.get("try_first_pass"):
        typed = pamh.authtok
        if typed is not None:
            try:
                pin = policy.check_pin(typed)
            except errors.InvalidPin:
                # A password that is not a PIN must never spend a TPM attempt.
                if options.get("use_first_pass"):
                    raise
        elif options.get("use_first_pass"):
            raise errors.InvalidPin("no PIN was entered earlier in the stack")
    if pin is None:
        typed = pamh.prompt(prompt)
        if typed == "":
            raise errors.PinSkipped("Enter at the PIN prompt: no PIN, the password instead")
        pin = policy.check_pin(typed)
    pamh.data[PIN_SENT] = True  # before the TPM: a timeout may still have counted it
    return bytearray(pin)


def _finish(pamh, error, user):
    """Log, show and return what the error's class declares (pinutil.errors)."""
    who = user or "an unknown user"
    pamh.syslog(error.priority, f"no PIN login for {who}: {errors.one_line(error)} "
                                f"[{error.token}]")
    text = error.user_message(who)
    if text:
        pamh.error(text)
    return error.pam_result


def authenticate(pamh, flags, args):
    name = None
    try:
        options = _options(pamh, args)
        policy_path = options["policy"] or DEFAULT_POLICY_PATH
        policy = load_policy(policy_path)
        # One TPM time budget per login, shared with master_key (see pinutil/deadline.py).
        budget = login_budget(pamh.shared_data("pinutil"), policy.helper_timeout)
        requester = stdin_requester()  # None: the host acts for itself
        # The unknown user, another user's PIN (a root host acting for its requester),
        # no PIN, a locked one: refused by the backend before `_read_pin` asks.
        backend = choose_backend(options["backend"], policy, budget, options["policy"],
                                 requester)
        name = pamh.get_user()
        _refuse_if_not_offered(pamh, options)
        if options.get("debug"):
            pamh.syslog(syslog.LOG_DEBUG, f"backend {backend.name} for {name}")
        backend.login(name, lambda prompt: _read_pin(pamh, options, policy, prompt))
    except errors.PinutilError as e:
        return _finish(pamh, e, name)
    pamh.syslog(syslog.LOG_INFO, f"PIN accepted for {name}")
    return pypam.PAM_SUCCESS


def setcred(pamh, flags, args):
    return pypam.PAM_SUCCESS
