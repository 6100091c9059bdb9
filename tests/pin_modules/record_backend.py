"""Test-only: records which backend tpm_pin's `backend=auto` picks in this very process
(same code, same AT_SECURE, same uids), as one JSON line in `record=/abs/file`.
Always PAM_IGNORE.

    auth optional pam_pypam.so module=record_backend moduledir=... policy=P record=F
"""
import json
import os

import pypam
from pinutil.deadline import TpmBudget
from pinutil.pin.login import choose_backend
from pinutil.pin.policy import load_policy
from pinutil.setid import running_setid


def authenticate(pamh, flags, args):
    options = dict(a.partition("=")[::2] for a in args)
    policy = load_policy(options["policy"])
    backend = choose_backend("auto", policy, TpmBudget(policy.helper_timeout), options["policy"])
    with open(options["record"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"backend": backend.name, "setid": running_setid(),
                            "uid": os.getuid(), "euid": os.geteuid()}) + "\n")
    return pypam.PAM_IGNORE


def setcred(pamh, flags, args):
    return pypam.PAM_IGNORE
