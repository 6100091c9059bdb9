"""Negative control for data_kept: state in a module global DOES leak between handles,
so the check in tests/test_pypam_handle.py is shown to be able to fail."""
import pypam

_state = {}


def authenticate(pamh, flags, args):
    if _state:
        pamh.error("stale data: ['token']")
        return pypam.PAM_AUTH_ERR
    _state["token"] = pamh.get_user()
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    return pypam.PAM_SUCCESS if "token" in _state else pypam.PAM_SESSION_ERR
