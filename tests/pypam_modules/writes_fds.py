"""Negative control for the output tests: writes to fds 0, 1 and 2 directly, which no
framework can stop; shows that the tests' captures do see such writes."""
import os

import pypam


def authenticate(pamh, flags, args):
    for fd in (0, 1, 2):
        try:
            os.write(fd, f"RAW-FD{fd}".encode())
        except OSError:
            pass
    return pypam.PAM_SUCCESS
