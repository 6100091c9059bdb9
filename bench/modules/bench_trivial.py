"""Trivial pypam module for bench/run.py: every entry point succeeds at once.

It measures the framework's own cost (interpreter, dispatch, handle), nothing else.
"""


def authenticate(pamh, flags, args):
    return 0


def setcred(pamh, flags, args):
    return 0


def acct_mgmt(pamh, flags, args):
    return 0


def open_session(pamh, flags, args):
    return 0


def close_session(pamh, flags, args):
    return 0


def chauthtok(pamh, flags, args):
    return 0
