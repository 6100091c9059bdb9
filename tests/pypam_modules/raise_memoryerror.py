"""A real MemoryError: an allocation no machine can satisfy."""


def authenticate(pamh, flags, args):
    return len(bytearray(1 << 62))
