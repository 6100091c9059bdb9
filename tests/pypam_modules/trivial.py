"""Succeeds in every hook without touching the handle."""
import pypam


def authenticate(pamh, flags, args):
    return pypam.PAM_SUCCESS


def setcred(pamh, flags, args):
    return pypam.PAM_SUCCESS


def acct_mgmt(pamh, flags, args):
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    return pypam.PAM_SUCCESS


def close_session(pamh, flags, args):
    return pypam.PAM_SUCCESS


def chauthtok(pamh, flags, args):
    return pypam.PAM_SUCCESS
