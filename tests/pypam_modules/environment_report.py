"""Reports how the interpreter was set up, for the hostile-environment comparison."""
import hashlib
import json
import sys

import pypam


def authenticate(pamh, flags, args):
    seen = {
        "prefix": sys.prefix, "exec_prefix": sys.exec_prefix,
        "base_prefix": sys.base_prefix, "executable": sys.executable,
        "path": sys.path, "flags": list(sys.flags),
        "modules": hashlib.sha256(" ".join(sorted(sys.modules)).encode()).hexdigest(),
        "warnings": list(sys.warnoptions), "xoptions": sys._xoptions,
        "stdout": repr(sys.stdout), "stderr": repr(sys.stderr),
        "filesystem_encoding": sys.getfilesystemencoding(),
    }
    pamh.info("report:" + json.dumps(seen))
    answer = pamh.prompt("Password: ")
    return pypam.PAM_SUCCESS if answer == "right" else pypam.PAM_AUTH_ERR
