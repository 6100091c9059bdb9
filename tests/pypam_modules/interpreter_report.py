"""Reports which interpreter runs it and how often it ran in this process (for
Python hosts: it must run in the host's own interpreter, loaded once)."""
import json
import sys

import pypam

_calls = 0


def authenticate(pamh, flags, args):
    global _calls
    _calls += 1
    pamh.info("report:" + json.dumps({
        "version": sys.version.split()[0],
        "host_marker": getattr(sys, "pypam_test_host_marker", None),
        "calls": _calls,
        "data_empty": not pamh.data,
    }))
    pamh.data["seen"] = True
    answer = pamh.prompt("Password: ")
    return pypam.PAM_SUCCESS if answer == "right" else pypam.PAM_AUTH_ERR
