"""Defines only authenticate: setcred must be PAM_IGNORE, the rest PAM_SYMBOL_ERR."""
import pypam


def authenticate(pamh, flags, args):
    return pypam.PAM_SUCCESS
