"""No core dump of pinutild or the proof process.

Their memory holds what no file may: the owner password and the master key's
authValue (the TPM worker), PINs and account passwords in flight. A crash, in libtss2
or cffi fed a malformed answer by an interposer on the TPM bus, would otherwise leave
them in a core file or in systemd-coredump's store (which honours the limit). Under
systemd the units' LimitCORE=0 does it (their seccomp filter refuses setrlimit);
without systemd (`--listen`) this does, hard limit included, so that the process
cannot raise it again.
"""
import resource


def forbid_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
