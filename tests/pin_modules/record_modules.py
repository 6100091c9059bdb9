"""Test-only: writes the names of every module loaded in this process (sys.modules),
one JSON list per call, to `record=/abs/file`. Placed after tpm_pin in a stack, it
shows what a login made the PAM application import. Always PAM_IGNORE.

    auth optional pam_pypam.so module=record_modules moduledir=... record=F
"""
import json
import sys

import pypam


def authenticate(pamh, flags, args):
    record = dict(a.partition("=")[::2] for a in args)["record"]
    with open(record, "a", encoding="utf-8") as f:
        f.write(json.dumps(sorted(sys.modules)) + "\n")
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE
