"""A stand-in for a keyring module (pam_gnome_keyring, pam_kwallet5), for the demo.

It tells what a keyring placed at this point of the stack would be given in
PAM_AUTHTOK, without showing a PIN or a password.
"""
import pypam

HEX = frozenset("0123456789abcdef")


def authenticate(pamh, flags, args):
    token = pamh.authtok
    if token is None:
        pamh.info("keyring receives: nothing")
    elif len(token) == 64 and set(token) <= HEX:
        pamh.info(f"keyring receives: the master-key token {token[:16]}...")
    else:
        pamh.info("keyring receives: a typed secret (not the token)")
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE
