"""Raises PamError(int(args[0]))."""
import pypam


def authenticate(pamh, flags, args):
    raise pypam.PamError(int(args[0]), "raised on purpose")
