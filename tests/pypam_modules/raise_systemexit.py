"""sys.exit(0): exit status 0 is PAM_SUCCESS's value and must not become success."""
import sys


def authenticate(pamh, flags, args):
    sys.exit(0)
