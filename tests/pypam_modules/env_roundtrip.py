"""pamh.env as a mapping: set, read, delete, iterate; leave values for the application."""
import json

import pypam


def authenticate(pamh, flags, args):
    env = pamh.env
    env["PYPAM_A"] = "alpha"
    env["PYPAM_B"] = "beta=with=equals é"
    env["PYPAM_GONE"] = "x"
    del env["PYPAM_GONE"]
    seen = {
        "a": env["PYPAM_A"],
        "get_missing": env.get("PYPAM_MISSING"),
        "gone_in": "PYPAM_GONE" in env,
        "keys": sorted(k for k in env if k.startswith("PYPAM_")),
        "len": len(env),
    }
    try:
        del env["PYPAM_NEVER_SET"]
        seen["del_missing"] = "no error"
    except KeyError:
        seen["del_missing"] = "KeyError"
    pamh.info("report:" + json.dumps(seen))
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    pamh.env["PYPAM_SESSION"] = pamh.env.get("PYPAM_A", "missing") + "-session"
    return pypam.PAM_SUCCESS
