"""tpm_pin with `backend=daemon` through the real PAM host (build/pamhost) and a real
pinutild: the PAM application then loads no TPM code at all, and a sandboxed
application (NoNewPrivileges and a private /dev, what polkit 127 gives its agent
helper) logs in with a PIN through the service, where the helper and direct backends
cannot. `auto` picks the service whenever its socket exists.

Every existing tpm_pin test also runs with the daemon backend
(tests/test_tpm_pin_module.py, `backend` fixture). polkit 127's helper itself runs as
root, for the agent on its stdin: tests/service/test_acting_for.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.accounts import AS_NOBODY
from tests.support.pamhost import PAM_ERROR_MSG, result_name
from tests.support.pinutild import ROOT, tpm_code

PIN = "2580"
WRONG = "1111"
# A private mount namespace whose /dev holds only null, zero, urandom and tty, then the
# application as nobody with no_new_privs (set-id bits of anything it runs are ignored).
_SANDBOX_SCRIPT = """
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev &&
mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 &&
mknod -m 666 /dev/urandom c 1 9 && mknod -m 666 /dev/tty c 5 0 &&
exec setpriv --no-new-privs --reuid=nobody --regid=nogroup --clear-groups -- "$@"
"""
SANDBOX = ["unshare", "-m", "--propagation", "private", "--",
           "sh", "-c", _SANDBOX_SCRIPT, "sandbox"]


def auth(report) -> str | None:
    return result_name(report, "auth")


def errors_shown(report) -> list[str]:
    return [m["text"] for m in report["messages"] if m["style"] == PAM_ERROR_MSG]


def _modules_after_login(pin_env, backend: str) -> list[str]:
    record = pin_env.record_file("modules.jsonl")
    svc = pin_env.service("modules", pin_env.tpm_pin_line(backend=backend),
                          pin_env.test_module_line("record_modules", f"record={record}"))
    report = pin_env.run(svc, user="root", answers=[PIN])
    assert auth(report) == "PAM_SUCCESS", report
    with open(record, encoding="utf-8") as f:
        return json.loads(f.readlines()[-1])


def test_a_login_through_the_service_loads_notpm_code(pin_env, pinutild_policy):
    pin_env.enrol("root", PIN)
    modules = _modules_after_login(pin_env, "daemon")
    assert "pinutil.service.client" in modules
    assert tpm_code(modules) == []
    # The control: the same record shows the TPM code a direct login loads.
    assert "pinutil.tpm._tss" in tpm_code(_modules_after_login(pin_env, "direct"))


def test_auto_uses_the_service_when_its_socket_exists(pin_env, pinutild_policy):
    pin_env.enrol("root", PIN)
    assert tpm_code(_modules_after_login(pin_env, "auto")) == []


def test_wrong_and_right_pin_through_the_service(pin_env, pinutild_policy):
    pin_env.enrol("root", PIN)
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="daemon"))
    report = pin_env.run(svc, user="root", answers=[WRONG])
    assert auth(report) == "PAM_AUTH_ERR"
    assert errors_shown(report) == ["Incorrect PIN (2 attempts left)."]
    assert pin_env.counter("root") == (1, 3)
    assert auth(pin_env.run(svc, user="root", answers=[PIN])) == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, 3)


def test_no_service_behind_the_socket_is_unavailable(pin_env, pinutild_policy):
    pin_env.enrol("root", PIN)
    pinutild_policy.stop()  # the socket file stays, nobody listens
    svc = pin_env.service("pin", pin_env.tpm_pin_line(backend="auto"))
    report = pin_env.run(svc, user="root", answers=[PIN])
    assert auth(report) == "PAM_AUTHINFO_UNAVAIL"
    assert report["conv_calls"] == 0
    assert pin_env.counter("root") == (0, 3)


def _sandboxed_login(pin_env, backend: str, prefix) -> dict:
    svc = pin_env.service(f"locker-{backend}", pin_env.tpm_pin_line(backend=backend))
    return pin_env.run(svc, user="nobody", answers=[PIN], prefix=prefix)


def test_a_sandboxed_application_logs_in_only_through_the_service(pin_env, pinutild_policy):
    """A screen-locker-like application as nobody, checking nobody's own PIN. Helper
    backend: a set-uid-root pinutil launcher (as in the set-uid tests), which works
    for nobody without the sandbox (the control) and not within it while the policy
    names no service (with one, `pinutil test` itself goes through the service and
    needs no set-id bit: then it works); direct: nobody may not open the TPM at all;
    daemon: works in the sandbox."""
    pin_env.enrol("nobody", PIN)
    launcher = pin_env.build_launcher(mode=0o4755)
    socket = pin_env.policy_extra.pop("service_socket")
    pin_env.write_policy(pinutil_path=launcher)
    assert auth(_sandboxed_login(pin_env, "helper", AS_NOBODY)) == "PAM_SUCCESS"  # control
    assert auth(_sandboxed_login(pin_env, "helper", SANDBOX)) == "PAM_AUTHINFO_UNAVAIL"
    pin_env.policy_extra["service_socket"] = socket
    pin_env.write_policy(pinutil_path=launcher)
    assert auth(_sandboxed_login(pin_env, "helper", SANDBOX)) == "PAM_SUCCESS"

    assert auth(_sandboxed_login(pin_env, "direct", SANDBOX)) == "PAM_AUTHINFO_UNAVAIL"
    assert pin_env.counter("nobody") == (0, 3)
    assert auth(_sandboxed_login(pin_env, "daemon", SANDBOX)) == "PAM_SUCCESS"
    assert auth(_sandboxed_login(pin_env, "auto", SANDBOX)) == "PAM_SUCCESS"
    assert pin_env.counter("nobody") == (0, 3)


def test_the_sandbox_is_one(pin_env):
    """What the sandbox gives the application: no_new_privs, uid nobody, four nodes in /dev."""
    script = "grep NoNewPrivs /proc/self/status; id -u; ls /dev"
    done = subprocess.run([*SANDBOX, "sh", "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["NoNewPrivs:", "1", "65534", "null", "tty", "urandom", "zero"]


_FAKE_SERVICE = """
import os, socket, sys
sys.path.insert(0, sys.argv[2])
from pinutil.service import protocol
yes = protocol.encode({"result": "success", "enrolled": True, "failures": 0, "limit": 3,
                       "locked": False, "attempts_left": 3, "record": "ok"})
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.recv(65536)
    conn.sendall(yes)
    conn.close()
"""


def test_a_socket_served_by_anyone_else_is_never_believed(pin_env):
    """A process of nobody's listening where the policy's service_socket points (a
    path an administrator got wrong) answers "success" to everything: the PAM side
    must not believe it (the peer must be root or the pinutild account), and no PIN
    reaches it."""
    pin_env.enrol("root", PIN)
    den = os.path.join(pin_env.dir, "nobodys")
    os.mkdir(den)
    os.chown(den, 65534, 65534)
    path = os.path.join(den, "fake.sock")
    fake = subprocess.Popen([*AS_NOBODY, sys.executable, "-I", "-c", _FAKE_SERVICE, path, ROOT],
                            stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert fake.stdout.readline() == "ready\n"
        pin_env.policy_extra["service_socket"] = path
        pin_env.write_policy()
        for backend in ("daemon", "auto"):
            svc = pin_env.service(f"fake-{backend}", pin_env.tpm_pin_line(backend=backend))
            report = pin_env.run(svc, user="root", answers=[WRONG])
            assert auth(report) == "PAM_AUTHINFO_UNAVAIL", report
            assert report["conv_calls"] == 0  # refused at the status: no PIN asked
        assert pin_env.counter("root") == (0, 3)
    finally:
        fake.kill()
        fake.wait()

