"""Reads PAM_AUTHTOK set by an earlier module; succeeds only if it equals args[0].

Uses both the item and get_authtok(), which must not prompt when a token is set.
"""
import pypam


def authenticate(pamh, flags, args):
    item = pamh.authtok
    token = pamh.get_authtok("should not be asked: ")
    pamh.ruser = f"item={item} get={token}"
    return pypam.PAM_SUCCESS if item == token == args[0] else pypam.PAM_AUTH_ERR
