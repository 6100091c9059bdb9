"""Sets PAM_AUTHTOK for the next module in the stack (args[0] is the token)."""
import pypam


def authenticate(pamh, flags, args):
    pamh.authtok = args[0]
    return pypam.PAM_SUCCESS
