"""Test-only: appends {"authtok": PAM_AUTHTOK, "user": PAM_USER} as one JSON line to
`record=/abs/file`, as a later password or keyring module would see them. Always
PAM_IGNORE. It writes the secret it sees on purpose: never install it.

    auth optional pam_pypam.so module=record_authtok moduledir=... record=/abs/file
"""
import json

import pypam


def authenticate(pamh, flags, args):
    path = next(a.partition("=")[2] for a in args if a.startswith("record="))
    with open(path, "a", encoding="utf-8", errors="surrogateescape") as f:
        f.write(json.dumps({"authtok": pamh.authtok, "user": pamh.user}) + "\n")
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE
