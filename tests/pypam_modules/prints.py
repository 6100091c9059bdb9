"""Writes through every Python channel that defaults to fds 1/2, then succeeds."""
import logging
import sys
import warnings

import pypam


def authenticate(pamh, flags, args):
    print("PRINTED-TO-STDOUT")
    print("PRINTED-TO-STDERR", file=sys.stderr)
    logging.warning("LOGGED-TO-ROOT-LOGGER")  # noqa: LOG015 - the root logger on purpose
    warnings.warn("WARNED")
    if sys.stdout is not None:
        sys.stdout.flush()
    return pypam.PAM_SUCCESS


def acct_mgmt(pamh, flags, args):
    # An uncaught exception: its traceback must reach syslog only.
    print("PRINTED-BEFORE-RAISE")
    raise RuntimeError("RAISED-AFTER-PRINT")
