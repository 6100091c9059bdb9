"""A stand-in keyring module for tests, shaped like pam_kwallet5 / pam_gnome_keyring.

    auth    optional pam_pypam.so module=fake_keyring moduledir=... record=/abs/file
    session optional pam_pypam.so module=fake_keyring moduledir=... record=/abs/file

`authenticate` stashes PAM_AUTHTOK in the handle's data (as pam_kwallet5 does with
pam_set_data) and `open_session` uses what was stashed. Each step appends one JSON
line {"stage": ..., "authtok": ...} to the record file, so a test can see exactly
what a keyring would have been unlocked with. Test-only: it writes the secret it
received to a file on purpose.
"""
import json

import pypam


def _record(args, stage, authtok):
    paths = [a.partition("=")[2] for a in args if a.startswith("record=")]
    with open(paths[0], "a") as f:
        f.write(json.dumps({"stage": stage, "authtok": authtok}) + "\n")


def authenticate(pamh, flags, args):
    pamh.data["authtok"] = pamh.authtok
    _record(args, "auth", pamh.authtok)
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE


def open_session(pamh, flags, args):
    _record(args, "open_session", pamh.data.get("authtok"))
    return pypam.PAM_SUCCESS


def close_session(pamh, flags, args):
    return pypam.PAM_SUCCESS
