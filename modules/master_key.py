"""pam_pypam module=master_key: hand keyring modules a TPM-derived token.

    auth optional pam_pypam.so module=master_key [policy=/abs/path] [debug]

`authenticate` asks the TPM (through pinutild when its socket, the policy's
`service_socket`, exists: docs/pinutild.md) for PAM_USER's token (HMAC-SHA256 of the
user name under the master key, `pinutil.master_key.token`) and puts it in
PAM_AUTHTOK, so the keyring module after it (pam_gnome_keyring, pam_kwallet5) is keyed
to the token whichever login method succeeded, and never sees a PIN or a password.

It returns PAM_IGNORE on every path: it must never change the authentication
decision. When it cannot derive the token (no TPM access in this process, no master
key, a bad policy), it logs why and leaves PAM_AUTHTOK as it was. The token is never
logged. Place it at the end of the "decide" substack, behind pam_deny, so it runs only
after a successful login (see examples/pam.d/README.md).

A root host that serves one client on its stdin (polkit 127's socket-activated agent
helper) acts for that client (pinutil.service.requester, as tpm_pin): it gets the
token of that client's own account only (a root client's: anyone's).

Arguments (pypam.arguments, the rules every module shares): `policy=PATH` (absolute;
default /etc/pinpam/policy, which gives `tcti`), `debug` (log successes too). Anything
else is logged as a warning and ignored; `policy=` given twice or not absolute, or
`debug=...`, leaves the token unset (logged).
"""
from __future__ import annotations

import os
import syslog

import pypam
from pypam.arguments import (
    ArgumentError,
    Arguments,
    Option,
    Switch,
    absolute_path,
    shown,
)

# pinutil is imported inside authenticate(): even a broken install (say, a missing
# compiled TSS binding) must end in PAM_IGNORE, not in the framework's
# PAM_SERVICE_ERR for a module that fails to import.


# The pam.d line (pypam's one parser: unknown arguments are logged and ignored, a known
# one in the wrong shape or given twice leaves the token unset).
ARGUMENTS = Arguments(
    Option("policy", absolute_path),
    Switch("debug"),  # pamh.debug
)


def authenticate(pamh, flags: int, args: list[str]) -> int:
    """Set PAM_AUTHTOK to PAM_USER's token; PAM_IGNORE always."""
    user = None
    try:
        from pinutil.deadline import login_budget, run_in_child, spend
        from pinutil.errors import PinutilError
        from pinutil.pin.policy import DEFAULT_POLICY_PATH, load_policy
    except BaseException as e:  # noqa: BLE001
        _log_failure(pamh, user, f"pinutil cannot be imported: {str(e)[:200]}")
        return pypam.PAM_IGNORE
    try:
        options = ARGUMENTS.parse(
            args, warn=lambda text: pamh.syslog(syslog.LOG_WARNING, text))
        policy_path = options["policy"] or DEFAULT_POLICY_PATH
        user = pamh.user
        if not user:
            pamh.syslog(syslog.LOG_NOTICE, "no PAM_USER yet; keyring token not set")
            return pypam.PAM_IGNORE
        if not _acts_for(pamh, user):
            return pypam.PAM_IGNORE
        policy = load_policy(policy_path)
        # Within the login's TPM budget (shared with tpm_pin): a hung TPM costs the whole
        # login at most that much. From pinutild when its socket exists (this process
        # then loads no TPM code), else in a forked child (pinutil/deadline.py).
        budget = login_budget(pamh.shared_data("pinutil"), policy.helper_timeout)
        if os.path.exists(policy.service_socket):
            token = spend(budget, _token_from_service, policy.service_socket, user)
        else:
            from pinutil import owner_auth
            from pinutil.master_key.token import user_token
            from pinutil.pin import salt_key

            # The owner password is read in the child, and only if the salt key must be
            # created (no persistent one): the host never holds it.
            token = run_in_child(budget, user_token, policy.tcti, user, None,
                                 salt_key.recorded_name_if_any(policy),
                                 policy.master_key_auth_file,
                                 owner_auth.loader(policy.owner_auth_file))
        pamh.authtok = token
        if pamh.debug:
            pamh.syslog(syslog.LOG_DEBUG, f"keyring token set for {shown(user)}")
    except PinutilError as e:  # messages of the core never hold a secret
        # The error's own priority (pinutil.errors): a by-design case is no error here.
        _log_failure(pamh, user, f"{e} [{e.token}]", e.priority)
    except ArgumentError as e:
        _log_failure(pamh, user, f"pam.d line: {e}")
    except BaseException:  # noqa: BLE001 - nothing may change the decision
        # Not the exception's text: it is not ours and could hold anything.
        _log_failure(pamh, user, "internal error", syslog.LOG_ERR)
    return pypam.PAM_IGNORE


def _acts_for(pamh, user: str) -> bool:
    """False (logged) when this is a root host that serves a client on its stdin
    (polkit 127's socket-activated agent helper; pinutil.service.requester) for a uid
    other than root's or `user`'s: that client must not have another user's token put
    in a handle it drives (the keyring modules after us would use it for them)."""
    from pinutil.service.requester import may_act_for, stdin_requester
    from pinutil.users import lookup_user

    requester = stdin_requester()  # None: the host acts for itself (no lookup then)
    if requester is None or may_act_for(requester, lookup_user(user).uid):
        return True
    pamh.syslog(syslog.LOG_NOTICE, f"keyring token not set for {shown(user)}: this root "
                f"host acts for uid {requester} (the peer of its standard input)")
    return False


def _token_from_service(seconds: float, path: str, user: str) -> str:
    from pinutil.service import client

    return client.master_key_token(path, user, seconds)


def _log_failure(pamh, user: str | None, reason: str,
                 priority: int = syslog.LOG_WARNING) -> None:
    try:
        who = shown(user) if user else "the user"
        pamh.syslog(priority, f"keyring token not set for {who}: {reason}")
    except BaseException:  # noqa: BLE001, S110 - a logging failure must not escape either
        pass


def setcred(pamh, flags: int, args: list[str]) -> int:
    """Nothing to do: the token lives only in PAM_AUTHTOK."""
    return pypam.PAM_IGNORE
