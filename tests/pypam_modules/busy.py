"""Touches most of the handle API on every call, for leak and thread tests."""
import pypam


def authenticate(pamh, flags, args):
    user = pamh.get_user()
    answer = pamh.prompt("Password: ")
    if answer != "right":
        return pypam.PAM_AUTH_ERR
    pamh.data["user"] = user
    pamh.data["blob"] = bytearray(4096)
    pamh.env["PYPAM_BUSY"] = user
    pamh.tty = "tty-" + user
    pamh.logger.debug("not logged without debug")
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    if pamh.data.get("user") != pamh.user or pamh.env.get("PYPAM_BUSY") != pamh.user:
        return pypam.PAM_SESSION_ERR
    return pypam.PAM_SUCCESS
