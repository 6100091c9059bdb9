"""What we know about modules without running them.

Used to keep explanations about decisions: credential and condition modules are
branched over (succeeds / fails / is unavailable / is ignored), pam_permit and pam_deny
return what their source says, and every other module (pam_env, pam_limits, a keyring)
is assumed to succeed: the worst case for "who gets in" of one stack. It is not the
worst case for what a PIN *skips* (the proof's rule 3): there an unknown module counts as
a check, unless it is in CHECKS_NOTHING.
"""
from __future__ import annotations

from collections.abc import Iterable

from .codes import SUCCESS
from .model import Handler

#: Modules that check a credential (a password, a key, a finger...). The admin adds
#: names with `--credential-module`. pam_pypam lines count by their pypam module name.
CREDENTIAL_MODULES = frozenset({
    "pam_unix", "pam_sss", "pam_ldap", "pam_krb5", "pam_u2f", "pam_fprintd",
    "pam_systemd_home", "tpm_pin", "pam_google_authenticator", "pam_oath", "pam_yubico",
    "pam_winbind", "pam_pkcs11", "pam_p11", "pam_userdb", "pam_radius_auth",
    "pam_tacplus", "pam_pwdfile", "pam_howdy", "pam_ssh_agent_auth", "pam_pinpam",
})
#: Modules whose success lets a user in by a condition, not a secret (root, a group...).
CONDITION_MODULES = frozenset({"pam_rootok", "pam_succeed_if", "pam_wheel", "pam_localuser",
                               "pam_listfile", "pam_access", "pam_timestamp", "pam_nologin",
                               "pam_securetty", "pam_time", "pam_faillock", "pam_shells"})
#: Modules whose pam_sm_authenticate decides nothing about who logs in, so a correct
#: PIN may skip them (the proof's rule 3; any other skipped module counts as a check,
#: e.g. a second factor, unless its control ignores its failure).
CHECKS_NOTHING = frozenset({
    "pam_cap",            # sets inheritable capabilities (pam_setcred), denies no one
    "pam_env",            # sets environment variables
    "pam_group",          # grants groups in pam_setcred; authenticate returns PAM_IGNORE
    "pam_faildelay",      # sets the delay after a failure
    "pam_echo",           # prints a text
    "pam_warn",           # logs the call
    "pam_gnome_keyring",  # keeps the password to unlock the keyring (rule 5: master_key)
    "pam_kwallet",        # the same for KWallet
    "pam_kwallet5",
    "pam_mount",          # keeps the password to mount volumes at the session
})
#: Fixed results by pam_sm_* function (Linux-PAM modules/pam_permit.c, pam_deny.c).
FIXED_RESULTS = {
    "pam_permit": {f: SUCCESS for f in ("pam_sm_authenticate", "pam_sm_setcred",
                                        "pam_sm_acct_mgmt", "pam_sm_open_session",
                                        "pam_sm_close_session", "pam_sm_chauthtok")},
    "pam_deny": {"pam_sm_authenticate": 7, "pam_sm_setcred": 17, "pam_sm_acct_mgmt": 7,
                 "pam_sm_open_session": 14, "pam_sm_close_session": 14,
                 "pam_sm_chauthtok": 20},
}


def credential_modules(extra: Iterable[str] = ()) -> frozenset[str]:
    """CREDENTIAL_MODULES and the admin's `--credential-module` names (pam_x.so or pam_x)."""
    return CREDENTIAL_MODULES | {n.removesuffix(".so") for n in extra}


def short_name(h: Handler) -> str:
    """`pam_unix` for pam_unix.so, the pypam module (`tpm_pin`) for pam_pypam.so."""
    base = h.name
    if base == "pam_pypam.so":
        for arg in h.args:
            if arg.startswith("module="):
                return arg[len("module="):]
    return base.removesuffix(".so")


def is_credential(h: Handler, extra: frozenset[str] = frozenset()) -> bool:
    return short_name(h) in CREDENTIAL_MODULES or short_name(h) in extra


def decides(h: Handler, extra: frozenset[str] = frozenset()) -> bool:
    """Whether explanations branch over this line's outcomes."""
    name = short_name(h)
    return (name in CREDENTIAL_MODULES or name in CONDITION_MODULES or name in extra
            or h.name == "pam_pypam.so")


def fixed_result(h: Handler, function: str) -> int | None:
    """The code this module always returns for `function`, if known."""
    table = FIXED_RESULTS.get(short_name(h))
    return None if table is None else table.get(function)
