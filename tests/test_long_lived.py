"""Long-lived, threaded, forking and Python hosts.

- 10,000 transactions in one process: flat memory, no fd growth (with a leaking
  module as the control that the measurement can see a leak);
- 8 threads x 200 transactions;
- fork after authenticate while a Python thread runs, authenticate again in the child;
- a Python application calling PAM in-process (ctypes and python-pam): the module runs
  in the host's own interpreter; a host of another Python minor version is refused.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.pamhost import (
    HOST_SOURCE,
    PAM_SERVICE_ERR,
    PAM_SUCCESS,
    ROOT,
    run_pam,
)
from tests.support.pypam_stacks import (
    assert_trusted_modules,
    pypam_line,
    pypam_service,
    reports,
    stage_rcs,
)

SERVICE = "pypam-long"
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
# The interpreter the venv was made from (and the shim embeds), started directly.
SYSTEM_PYTHON = os.path.realpath(VENV_PYTHON)
KIB_PER_MB = 1024


@pytest.fixture(autouse=True)
def trusted_modules():
    assert_trusted_modules()


@pytest.fixture
def busy(pam_confdir):
    pam_confdir.write(SERVICE, pypam_service("busy"))
    return pam_confdir


# -- one process, many transactions --------------------------------------------------
def test_10000_transactions_flat_memory_and_no_fd_growth(busy):
    report = run_pam(busy, SERVICE, stages=("auth", "open"), answers=["right"],
                     extra_args=["--repeat", "10000", "--sample-every", "1000"], timeout=120)
    assert report["transactions"] == 10000 and report["failures"] == 0
    samples = report["rss_kb_after"]  # after 1000, 2000, ..., 10000
    assert len(samples) == 10
    growth = samples[-1] - samples[0]
    assert growth < KIB_PER_MB, f"RSS grew {growth} KiB from 1,000 to 10,000: {samples}"
    assert report["fds_after"] == report["fds_before"]
    assert report["stdout"] == report["stderr"] == ""


def test_memory_check_sees_a_leaking_module(pam_confdir):
    # The control: 2 KiB kept per call is ~18 MB between the two samples.
    pam_confdir.write(SERVICE, pypam_service("leaky"))
    report = run_pam(pam_confdir, SERVICE,
                     extra_args=["--repeat", "10000", "--sample-every", "1000"], timeout=120)
    samples = report["rss_kb_after"]
    assert samples[-1] - samples[0] > 10 * KIB_PER_MB


def test_repeated_transaction_cost(pam_confdir):
    # Not a benchmark (bench/ is), but a budget that catches a per-call reload or a
    # re-import: 2,000 trivial transactions average well under a millisecond each.
    pam_confdir.write(SERVICE, pypam_service("trivial"))
    report = run_pam(pam_confdir, SERVICE, extra_args=["--repeat", "2000"])
    assert report["failures"] == 0
    assert report["per_txn_ms"] < 1.0, report["per_txn_ms"]


# -- threads -----------------------------------------------------------------------------
def test_8_threads_x_200_transactions(busy):
    report = run_pam(busy, SERVICE, stages=("auth", "open"), answers=["right"],
                     extra_args=["--threads", "8", "--repeat", "200"], timeout=120)
    assert report["transactions"] == 1600
    assert report["failures"] == 0
    assert report["fds_after"] == report["fds_before"]


def test_thread_failures_are_counted(busy):
    # The control: a wrong answer fails every transaction of every thread.
    report = run_pam(busy, SERVICE, stages=("auth",), answers=["wrong"],
                     extra_args=["--threads", "8", "--repeat", "20"])
    assert report["failures"] == 160


# -- fork -------------------------------------------------------------------------------
@pytest.mark.parametrize("child_end", [False, True])
@pytest.mark.parametrize("attempt", range(3))
def test_fork_while_a_python_thread_runs(pam_confdir, attempt, child_end):
    pam_confdir.write(SERVICE, pypam_service("thread_worker"))
    extra = ["--fork-between", "--child-timeout", "15"]
    if child_end:
        extra.append("--child-pam-end")
    report = run_pam(pam_confdir, SERVICE, stages=("auth", "auth"), extra_args=extra,
                     timeout=60)
    child = report["child"]
    assert report["child_timeout"] is False, "the forked child deadlocked"
    assert child["exit_status"] == 0 and child["signal"] is None
    assert child["result"]["rc"] == PAM_SUCCESS
    if child_end:
        assert child["result"]["end"] == PAM_SUCCESS
    assert stage_rcs(report) == [PAM_SUCCESS, PAM_SUCCESS]  # the parent goes on too
    assert report["failures"] == 0


# -- Python hosts -----------------------------------------------------------------------
CTYPES_HOST = textwrap.dedent('''
    """A Python application authenticating through libpam in-process (ctypes)."""
    import ctypes
    import json
    import sys
    import threading

    sys.pypam_test_host_marker = "ctypes-host"
    confdir, service = sys.argv[1].encode(), sys.argv[2].encode()

    libpam = ctypes.CDLL("libpam.so.0")  # RTLD_LOCAL, as ctypes does by default
    libc = ctypes.CDLL(None)
    libc.calloc.restype = ctypes.c_void_p
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.strdup.restype = ctypes.c_void_p
    libc.strdup.argtypes = [ctypes.c_char_p]

    class Message(ctypes.Structure):
        _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]

    class Response(ctypes.Structure):
        _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]

    CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                            ctypes.POINTER(ctypes.POINTER(Message)),
                            ctypes.POINTER(ctypes.POINTER(Response)), ctypes.c_void_p)

    class Conv(ctypes.Structure):
        _fields_ = [("conv", CONV), ("appdata_ptr", ctypes.c_void_p)]

    messages = []

    @CONV
    def conversation(n, msgs, resp, _appdata):
        answers = ctypes.cast(libc.calloc(n, ctypes.sizeof(Response)),
                              ctypes.POINTER(Response))
        for i in range(n):
            m = msgs[i].contents
            messages.append([m.msg_style, m.msg.decode()])
            if m.msg_style in (1, 2):
                answers[i].resp = libc.strdup(b"right")
        resp[0] = answers
        return 0

    libpam.pam_start_confdir.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.POINTER(Conv), ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p)]
    libpam.pam_authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int]
    libpam.pam_end.argtypes = [ctypes.c_void_p, ctypes.c_int]

    def authenticate(results):
        conv = Conv(conversation, None)
        handle = ctypes.c_void_p()
        rc = libpam.pam_start_confdir(service, b"alice", ctypes.byref(conv), confdir,
                                      ctypes.byref(handle))
        assert rc == 0, rc
        rc = libpam.pam_authenticate(handle, 0)
        libpam.pam_end(handle, rc)
        results.append(rc)

    results = []
    authenticate(results)
    authenticate(results)
    worker = threading.Thread(target=authenticate, args=(results,))
    worker.start()
    worker.join()
    # The host's own stdout still works: the shim leaves a host interpreter's stdio.
    print(json.dumps({"results": results, "messages": messages,
                      "version": sys.version.split()[0]}))
''')


def _run_python_host(python: str, script: str, confdir, capture=None, *args: str) -> dict:
    argv = [python, "-c", script, os.fspath(confdir), SERVICE, *args]
    if capture is not None:
        capture.clear()
        argv = capture.wrap(argv)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    if capture is not None:
        capture.sync()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _info_reports(messages: list) -> list:
    return reports({"messages": [{"style": s, "text": t} for s, t in messages]})


@pytest.mark.parametrize("python", [VENV_PYTHON, SYSTEM_PYTHON])
def test_ctypes_python_host_runs_the_module_in_its_own_interpreter(pam_confdir, python):
    pam_confdir.write(SERVICE, pypam_service("interpreter_report"))
    out = _run_python_host(python, CTYPES_HOST, pam_confdir)
    assert out["results"] == [PAM_SUCCESS] * 3
    seen = _info_reports(out["messages"])
    # One interpreter, the host's: its marker is visible, and the module was loaded
    # once and called three times (twice in the main thread, once in another).
    assert [r["host_marker"] for r in seen] == ["ctypes-host"] * 3
    assert [r["calls"] for r in seen] == [1, 2, 3]
    assert all(r["data_empty"] for r in seen)  # each new handle starts with no data
    assert {r["version"] for r in seen} == {out["version"]}


# A process that already holds another Python: an interpreter linked statically (as
# pyenv builds one) exports its own Py_GetVersion from the executable, and that one
# interposes the libpython the shim links. A fresh Debian machine has no second Python
# minor version to run, so the host is pamhost exporting a foreign Py_GetVersion the
# same way; the shim must refuse before it touches any other Python symbol.
FOREIGN_PYTHON = textwrap.dedent("""
    const char *Py_GetVersion(void) { return "3.99.0 (foreign, statically linked)"; }
    int Py_IsInitialized(void) { return 1; }
""")


@pytest.fixture(scope="module")
def foreign_python_host(tmp_path_factory):
    work = tmp_path_factory.mktemp("foreign-python")
    work.chmod(0o755)
    (work / "foreign.c").write_text(FOREIGN_PYTHON)
    binary = str(work / "pamhost-foreign-python")
    subprocess.run(["gcc", "-O2", "-Wall", "-rdynamic", "-o", binary, HOST_SOURCE,
                    str(work / "foreign.c"), "-lpam", "-lpthread"], check=True)
    return binary


def test_host_holding_another_python_minor_version_is_refused(syslog_capture, pam_confdir,
                                                              foreign_python_host):
    pam_confdir.write(SERVICE, pypam_service("interpreter_report"))
    report = syslog_capture.run_pam(pam_confdir, SERVICE, stages=("auth", "auth"),
                                    host=foreign_python_host)
    assert stage_rcs(report) == [PAM_SERVICE_ERR, PAM_SERVICE_ERR]
    assert reports(report) == []  # the module never ran
    assert report["stdout"] == report["stderr"] == ""
    built = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert (f"pypam: cannot start Python: host runs Python 3.99.0, pam_pypam was built "
            f"for {built}; rebuild and reinstall pypam for the installed Python")\
        in syslog_capture.text()


PYTHON_PAM_HOST = textwrap.dedent('''
    """python-pam, pointed at a private service directory.

    python-pam calls plain pam_start (always /etc/pam.d). Its PamAuthenticator keeps
    pam_start as an instance attribute, so this host replaces that one attribute with
    pam_start_confdir on the test's directory; the rest of python-pam is unchanged.
    """
    import ctypes
    import json
    import sys

    import pam

    sys.pypam_test_host_marker = "python-pam-host"
    confdir, service = sys.argv[1].encode(), sys.argv[2]
    libpam = ctypes.CDLL("libpam.so.0")
    libpam.pam_start_confdir.restype = ctypes.c_int
    started = []

    def pam_start_confdir(service_name, user, conv, handle):
        started.append(service_name.decode())
        return libpam.pam_start_confdir(service_name, user, conv, confdir, handle)

    results = []
    for password in ("right", "right", "wrong"):
        p = pam.pam()
        p.pam_start = pam_start_confdir
        results.append([p.authenticate("alice", password, service=service), p.code])
    print(json.dumps({"results": results, "started": started, "messages": p.messages}))
''')


def test_python_pam_host(pam_confdir):
    # python-pam follows a successful pam_authenticate with pam_acct_mgmt and
    # pam_setcred; interpreter_report has neither (setcred: PAM_IGNORE), so pam_permit
    # supplies those results.
    pam_confdir.write(SERVICE, pypam_line("auth", "interpreter_report", control="required")
                      + "auth required pam_permit.so\naccount required pam_permit.so\n")
    out = _run_python_host(VENV_PYTHON, PYTHON_PAM_HOST, pam_confdir)
    assert out["started"] == [SERVICE] * 3  # every handle came from our directory
    assert out["results"] == [[True, PAM_SUCCESS], [True, PAM_SUCCESS], [False, 7]]
    # python-pam keeps the info messages; the last one is from the third call.
    [seen] = [json.loads(m[len("report:"):]) for m in out["messages"]
              if m.startswith("report:")]
    assert seen["host_marker"] == "python-pam-host" and seen["calls"] == 3
