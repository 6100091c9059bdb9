"""Reports pamh.strerror() for every code in args."""
import json

import pypam


def authenticate(pamh, flags, args):
    pamh.info("report:" + json.dumps({a: pamh.strerror(int(a)) for a in args}))
    return pypam.PAM_SUCCESS
