"""A minimal pypam module: asks for a word and accepts "hello".

Used by the foundation demo and tests; real modules live in modules/.
"""
import pypam


def authenticate(pamh, flags, args):
    user = pamh.get_user()
    answer = pamh.prompt(f"Say hello, {user}: ")
    if answer != "hello":
        pamh.error("That was not hello.")
        return pypam.PAM_AUTH_ERR
    pamh.info("Hello to you too.")
    pamh.data["greeted"] = user
    return pypam.PAM_SUCCESS


def open_session(pamh, flags, args):
    # Data kept from authenticate on this same handle.
    pamh.env["GREETED"] = pamh.data.get("greeted", "nobody")
    return pypam.PAM_SUCCESS


def close_session(pamh, flags, args):
    return pypam.PAM_SUCCESS
