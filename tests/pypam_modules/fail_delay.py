"""Requests a failure delay of int(args[0]) microseconds, returns args[1] (a PAM code)."""


def authenticate(pamh, flags, args):
    pamh.fail_delay(int(args[0]))
    return int(args[1])
