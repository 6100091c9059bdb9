"""Logs the user name as a module would ("no PIN login for NAME"): NAME is PAM_USER,
which some hosts let a remote client choose."""
import syslog

import pypam


def authenticate(pamh, flags, args):
    pamh.syslog(syslog.LOG_NOTICE, f"no PIN login for {pamh.user}: unknown user")
    return pypam.PAM_AUTH_ERR
