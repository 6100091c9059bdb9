"""Negative control for the memory test: keeps 2 KiB per call forever."""
import pypam

_kept = []


def authenticate(pamh, flags, args):
    _kept.append(bytes(2048) + str(len(_kept)).encode())
    return pypam.PAM_SUCCESS
