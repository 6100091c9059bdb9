"""pamh.data: a Python object stored in authenticate must reach open_session of the
SAME handle, and a new handle must start empty (even at a reused address)."""
import pypam


class Token:
    """Not serialisable on purpose: data holds Python objects, not strings."""

    def __init__(self, user):
        self.user = user
        self.callback = lambda: user


def authenticate(pamh, flags, args):
    if pamh.data:
        # Left over from an earlier transaction: the leak this module detects.
        pamh.error(f"stale data: {sorted(pamh.data)}")
        return pypam.PAM_AUTH_ERR
    pamh.data["token"] = Token(pamh.get_user())
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    token = pamh.data.get("token")
    if token is None or token.callback() != pamh.user:
        return pypam.PAM_SESSION_ERR
    pamh.env["PYPAM_DATA_USER"] = token.user
    return pypam.PAM_SUCCESS


def close_session(pamh, flags, args):
    return pypam.PAM_SUCCESS if "token" in pamh.data else pypam.PAM_SESSION_ERR
