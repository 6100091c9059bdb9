"""Why a TCTI could not be opened, in words an administrator can act on.

Called only after opening failed (tpm2-tss says no more than "IO error"): names the
device or socket and the likely reason (missing, permission, not a character device,
nothing listening). The /dev/tpm0-without-resource-manager case is refused before
anything is opened (`context.refuse_without_resource_manager`).
"""
from __future__ import annotations

import os
import stat


def why_unreachable(tcti: str) -> str:
    """One sentence: what `tcti` names and why it is probably out of reach."""
    name, _, conf = tcti.partition(":")
    if name == "device":
        return _device(conf or "/dev/tpm0")
    if name in ("swtpm", "mssim"):
        params = dict(part.partition("=")[::2] for part in conf.split(",") if part)
        if params.get("path"):
            return _socket(params["path"])
        where = f"{params.get('host', 'localhost')}:{params.get('port', '2321')}"
        return f"no {name} simulator answered at {where}"
    return (f"the TCTI {name!r} could not be loaded or did not answer (is tpm2-tss's "
            f"libtss2-tcti-{name} installed?)")


def _device(path: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (f"{path} does not exist: this machine has no TPM, or its driver is not "
                "loaded (see `ls /dev/tpm*`)")
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is not a character device"
    if not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
        return (f"permission denied: {path} is {_owner(st)} {stat.S_IMODE(st.st_mode):04o} "
                f"and uid {os.geteuid()} (gid {os.getegid()}) may not read and write it "
                "(the installed pinutil is set-gid tss for this; is the device's group tss?)")
    return f"{path} opened but did not answer as a TPM (busy or failing?)"


def _socket(path: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"no simulator socket at {path} (is swtpm running?)"
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    if not os.access(path, os.R_OK | os.W_OK, effective_ids=True):
        return f"permission denied: {path} is {_owner(st)} {stat.S_IMODE(st.st_mode):04o}"
    return f"nothing answered on {path} (is swtpm running?)"


def _owner(st: os.stat_result) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"
