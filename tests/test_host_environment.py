"""A PIN login leaves the host's environment exactly as it was, and libtss2 never
writes to the host's fds 0-2 (issue 9, finding 8, first half).

The module used to set TSS2_LOG and remove TSS2_LOGFILE in the host's own environment
(from a worker thread, racing the host's getenv; inherited by everything the host ran
afterwards). Now the TPM is opened only in a forked child, so only the child's copy of
the environment changes, and the child's fds 0-2 are /dev/null. build/pamhost reports
its environ (in order, every byte) before and after the transaction.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.pamhost import PAM_PYPAM_SO, result_name

PIN = "2580"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["direct", "helper"])
def backend(request) -> str:
    return request.param


def master_key_line(pin_env) -> str:
    return f"auth optional {PAM_PYPAM_SO} module=master_key policy={pin_env.policy}"


def test_a_pin_login_leaves_the_host_environment_byte_identical(pin_env, backend):
    pin_env.enrol("root", PIN)
    tss_log = os.path.join(pin_env.dir, "tss.log")
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend),
                          master_key_line(pin_env))
    env = {"TSS2_LOGFILE": tss_log, "PYPAM_CANARY": "caf\u00e9 = \u2603"}
    report = pin_env.run(svc, user="root", answers=[PIN], env=env,
                         extra_args=["--report-environ"])
    assert result_name(report, "auth") == "PAM_SUCCESS"
    before, after = report["environ_before"], report["environ_after"]
    assert f"TSS2_LOGFILE={tss_log}" in before
    assert after == before
    assert not any(entry.startswith("TSS2_LOG=") for entry in after)
    assert not os.path.exists(tss_log)


@pytest.mark.parametrize("tpm", ["working", "absent"])
def test_libtss2_writes_nothing_to_fds_0_2_even_when_asked_to_trace(pin_env, backend, tpm):
    """A regression guard rather than a new hole: the host asks libtss2 for its most
    verbose logging on stderr, and the TPM is either working or absent (libtss2 then
    logs errors at its default level)."""
    pin_env.enrol("root", PIN)
    if tpm == "absent":
        pin_env.write_policy(tcti=f"swtpm:path={pin_env.dir}/no-such-tpm")
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend=backend),
                          master_key_line(pin_env))
    report = pin_env.run(svc, user="root", answers=[PIN], env={"TSS2_LOG": "all+trace"})
    expected = "PAM_SUCCESS" if tpm == "working" else "PAM_AUTHINFO_UNAVAIL"
    assert result_name(report, "auth") == expected
    assert report["stdout"] == "" and report["stderr"] == ""


# A Python application authenticating through PAM (python-pam, pamela: ctypes), with
# threads of its own: the module then runs in the application's interpreter and the
# worker is a fork of it. Its os.environ and its fds must come out as they went in.
PYTHON_HOST = r'''
import ctypes, json, os, sys, threading
confdir, service, pin = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3]
libpam, libc = ctypes.CDLL("libpam.so.0"), ctypes.CDLL(None)
libc.strdup.restype = ctypes.c_void_p
libc.calloc.restype = ctypes.c_void_p
class Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]
class Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]
CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(Message)),
                        ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)
class Conv(ctypes.Structure):
    _fields_ = [("conv", CONV), ("appdata_ptr", ctypes.c_void_p)]
@CONV
def conversation(n, msgs, resp, _appdata):
    answers = ctypes.cast(libc.calloc(n, ctypes.sizeof(Response)), ctypes.POINTER(Response))
    for i in range(n):
        if msgs[i].contents.msg_style in (1, 2):
            answers[i].resp = libc.strdup(pin.encode())
    resp[0] = answers
    return 0
libpam.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(Conv),
                                     ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
libpam.pam_authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int]
libpam.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]
stop = threading.Event()
busy = threading.Thread(target=lambda: [sum(range(1000)) for _ in iter(lambda: stop.is_set(), True)])
busy.start()
environ_before = dict(os.environ)
def tpm_fds():
    out = []
    for n in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + n)
        except OSError:
            continue
        if target.startswith(("socket:", "/dev/tpm")):
            out.append(target)
    return out
fds_before = tpm_fds()
results = []
for _ in range(2):
    conv, handle = Conv(conversation, None), ctypes.c_void_p()
    assert libpam.pam_start_confdir(service, b"root", ctypes.byref(conv), confdir,
                                    ctypes.byref(handle)) == 0
    rc = libpam.pam_authenticate(handle, 0)
    libpam.pam_end(handle, rc)
    results.append(rc)
stop.set()
busy.join()
print(json.dumps({"results": results, "environ_same": dict(os.environ) == environ_before,
                  "tss2_log": os.environ.get("TSS2_LOG"), "new_tpm_fds": sorted(set(tpm_fds()) - set(fds_before)),
                  "threads": threading.active_count()}))
'''


@pytest.mark.parametrize("tpm", ["answering", "hung"])
def test_a_python_host_keeps_its_environment_and_fds(pin_env, tpm):
    pin_env.enrol("root", PIN)
    pin_env.write_policy(helper_timeout=1)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="direct"),
                          master_key_line(pin_env))
    python = os.path.join(ROOT, ".venv", "bin", "python")
    if tpm == "hung":
        pin_env.swtpm.pause()
    try:
        done = subprocess.run([python, "-c", PYTHON_HOST, pin_env.pamd.path, svc, PIN],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={"PATH": "/usr/bin:/bin", "TSS2_LOGFILE": "/dev/full"})
    finally:
        pin_env.swtpm.resume()
    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = json.loads(done.stdout)
    expected = 0 if tpm == "answering" else 9  # PAM_SUCCESS / PAM_AUTHINFO_UNAVAIL
    assert out["results"] == [expected, expected]
    assert out["environ_same"] and out["tss2_log"] is None
    assert out["new_tpm_fds"] == []
    assert out["threads"] == 1  # no worker thread left behind in the application
