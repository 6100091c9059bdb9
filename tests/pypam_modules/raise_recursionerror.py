"""A real RecursionError (unbounded recursion)."""


def _down(n):
    return _down(n + 1) + 1


def authenticate(pamh, flags, args):
    return _down(0)
