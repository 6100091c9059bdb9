"""Test-only: sets PAM_AUTHTOK to `token=VALUE`, as a password module earlier in the
stack would (pam_unix after the user typed a password). Always PAM_IGNORE, so it never
changes the stack's decision.

    auth optional pam_pypam.so module=set_authtok moduledir=... token=hunter2
"""
import pypam


def authenticate(pamh, flags, args):
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "token":
            pamh.authtok = value
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE
