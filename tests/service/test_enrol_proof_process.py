"""The production shape of the enrolment proof: pinutild as its own unprivileged
account (here an account `pinutild` that exists only in the test's namespace, with
the group tss like the unit gives it), and `pinutil-proof --listen` as root, the one
that runs pam_unix. A user enrols their own PIN with their password and logs in with
it; the proof process answers nobody but the service's account and root; pinutild
believes no proof process that is not root; without one, a non-root pinutild refuses
a user's setup (root still enrols anyone)."""
from __future__ import annotations

import grp
import os
import subprocess
import time

import pytest

from devtools.pinutild import PYTHON, ROOT, wait_for_listener
from pinutil.service import protocol
from tests.service.enrol_support import (
    PASSWORD,
    PIN,
    UID,
    USER,
    as_user,
    converse,
    read_frame,
    start_in_namespace,
)
from tests.service.test_units import unit
from tests.support.pin_env import NV_BASE

SERVICE_UID = 4343
HANDLE = NV_BASE + UID


class Shape:
    """The accounts, the proof process and pinutild as their own processes."""

    def __init__(self, pin_env, accounts) -> None:
        self.pin_env, self.accounts = pin_env, accounts
        accounts.add_user(USER, UID, PASSWORD)
        accounts.add_user("pinutild", SERVICE_UID, "not used")
        tss = grp.getgrnam("tss").gr_gid
        self.as_service = ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}",
                           f"--groups={tss}", "--"]
        # What the unit and the installation give the service: the TPM (the swtpm's
        # sockets, like /dev/tpmrm0 to tss), the enrolment directory (root:tss 0770),
        # a directory for its socket.
        os.chmod(pin_env.swtpm.state_dir, 0o711)
        os.makedirs(pin_env.enrolment_dir, exist_ok=True)
        os.chown(pin_env.enrolment_dir, 0, tss)
        os.chmod(pin_env.enrolment_dir, 0o770)
        self.run_dir = os.path.join(pin_env.dir, "run")
        os.mkdir(self.run_dir)
        os.chown(self.run_dir, SERVICE_UID, SERVICE_UID)
        self.proof_socket = os.path.join(pin_env.dir, "proof.sock")
        self.processes: list = []

    def start_proof(self, *extra: str, who=()) -> subprocess.Popen:
        log = open(self.proof_socket + ".log", "ab")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen([*self.accounts.prefix(), *who, PYTHON, "-m",
                                 "pinutil.service.proof", "--listen", self.proof_socket,
                                 *extra], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, env={"PATH": "/usr/bin:/bin"})
        self.processes.append((proc, log))
        wait_for_listener(self.proof_socket, proc)
        return proc

    def start_service(self, *extra: str):
        service = start_in_namespace(self.pin_env, self.accounts, *extra,
                                     name="run/pinutild.sock", prefix=self.as_service)
        self.processes.append((service, None))
        return service

    def client(self, uid: int = UID) -> list[str]:
        """Clients run in the namespace too: they believe a service run by `pinutild`."""
        return [*self.accounts.prefix(), *as_user(uid)]

    def stop(self) -> None:
        for proc, log in self.processes:
            if log is None:
                proc.stop()
            else:
                proc.terminate()
                proc.wait(timeout=30)
                log.close()


@pytest.fixture
def shape(pin_env, accounts, syslog_capture):
    made = Shape(pin_env, accounts)
    try:
        yield made
    finally:
        made.stop()


def test_a_user_enrols_through_the_unprivileged_service_and_logs_in(pin_env, shape):
    shape.start_proof()
    service = shape.start_service("--proof", shape.proof_socket)
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                     shape.client())
    assert [style for _, style in reply["prompts"]] == ["echo_off", "new_pin"]
    assert reply["reply"]["result"] == "success", (reply, service.output())
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
    check = converse(service.socket, {"verb": "pin-check", "user": USER, "pin": PIN.encode()},
                     [], shape.client())
    assert check["reply"] == {"result": "success"}, check
    # A wrong password through the same path enrols nothing.
    converse(service.socket, {"verb": "pin-delete", "user": USER, "pin": PIN.encode()}, [],
             shape.client())
    wrong = converse(service.socket, {"verb": "pin-setup", "user": USER}, ["nope", PIN],
                     shape.client())
    assert wrong["reply"]["result"] == "wrong_password"
    assert HANDLE not in pin_env.enrolled_handles()


def test_without_a_proof_process_an_unprivileged_service_refuses_users(pin_env, shape):
    service = shape.start_service()
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                     shape.client())
    assert reply["reply"]["result"] == "permission_denied" and reply["prompts"] == []
    assert HANDLE not in pin_env.enrolled_handles()
    root = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PIN],
                    [*shape.accounts.prefix()])
    assert root["reply"]["result"] == "success", root


# A proof process that says "success" to everything, run by the user (a socket path
# an administrator got wrong, in a directory the user may write).
_LIAR = f"""
import os, socket, sys
sys.path.insert(0, {ROOT!r})
from pinutil.service import protocol
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
listener.listen(4)
while True:
    conn, _ = listener.accept()
    try:
        conn.recvmsg(4096, 64)
        conn.sendall(protocol.encode({{"result": "success"}}))
    except OSError:
        pass
    conn.close()
"""


def test_pinutild_believes_no_proof_process_that_is_not_root(pin_env, shape):
    fake_dir = os.path.join(pin_env.dir, "fake")
    os.mkdir(fake_dir)
    os.chown(fake_dir, UID, UID)
    liar_socket = os.path.join(fake_dir, "proof.sock")
    liar = subprocess.Popen([*as_user(), PYTHON, "-I", "-c", _LIAR, liar_socket],
                            stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    shape.processes.append((liar, open(os.devnull, "rb")))  # noqa: SIM115
    wait_for_listener(liar_socket, liar)
    service = shape.start_service("--proof", liar_socket)
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PIN, PIN],
                     shape.client())
    assert reply["reply"]["result"] == "tpm_unavailable" and reply["prompts"] == [], reply
    assert "not root" in reply["reply"]["error"]
    assert HANDLE not in pin_env.enrolled_handles()


def test_the_proof_process_answers_only_the_service(pin_env, shape):
    """Its socket is 0600, owned by the service's account: another user cannot connect;
    opened to everyone (an administrator's mistake), SO_PEERCRED still refuses them."""
    shape.start_proof()
    request = protocol.encode({"user": USER, "uid": UID})
    probe = f"""
import socket, sys
sys.path.insert(0, {ROOT!r})
from pinutil.service import protocol
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(30)
try:
    sock.connect({shape.proof_socket!r})
except PermissionError:
    print("refused at connect")
    raise SystemExit(0)
try:  # the proof process may refuse (and close) before reading the request
    sock.sendall({request!r})
except BrokenPipeError:
    pass
header = sock.recv(4)
body = b""
while len(body) < int.from_bytes(header, "big"):
    body += sock.recv(4096)
print(protocol.decode_body(body))
"""
    as_the_user = [*shape.client(), PYTHON, "-I", "-c", probe]
    done = subprocess.run(as_the_user, capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout.strip() == "refused at connect", done.stderr
    os.chmod(shape.proof_socket, 0o666)
    done = subprocess.run(as_the_user, capture_output=True, text=True, timeout=60, check=False)
    assert "'result': 'permission_denied'" in done.stdout, done.stderr
    assert f"uid {UID} may not ask" in done.stdout


def test_the_proof_process_refuses_another_users_password(pin_env, shape):
    """pinutild (root here, the service's peer) asks for USER with root's uid, or for
    root with USER's: refused before PAM (no prompt reaches the client)."""
    import socket as sockets

    shape.start_proof()
    for user, uid in ((USER, 0), ("root", UID)):
        client, kept = sockets.socketpair()
        conn = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
        conn.settimeout(30)
        conn.connect(shape.proof_socket)
        conn.sendmsg([protocol.encode({"user": user, "uid": uid})],
                     [(sockets.SOL_SOCKET, sockets.SCM_RIGHTS,
                       __import__("array").array("i", [client.fileno()]))])
        client.close()
        assert read_frame(conn)["result"] == "permission_denied"
        kept.settimeout(5)
        assert kept.recv(100) == b""  # no prompt was sent on the client's connection
        conn.close()
        kept.close()


# The service's account asking the proof process for USER's password on a socketpair
# of its own (review F3: a compromised pinutild as a root-run password oracle). Prints
# per guess whether a prompt reached its "client" end, and the verdict.
_ORACLE = """
import array, socket, sys
sys.path.insert(0, ROOT_DIR)
from pinutil.service import protocol
def frame(sock):
    header = b""
    while len(header) < 4:
        data = sock.recv(4 - len(header))
        if not data:
            return None
        header += data
    body = b""
    while len(body) < int.from_bytes(header, "big"):
        body += sock.recv(4096)
    return protocol.decode_body(body)
for guess in sys.argv[3:]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(60)
    conn.connect(sys.argv[1])
    theirs, mine = socket.socketpair()
    mine.settimeout(60)
    conn.sendmsg([protocol.encode({"user": sys.argv[2], "uid": UID})],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [theirs.fileno()]))])
    theirs.close()
    prompt = frame(mine)
    if prompt is not None:
        mine.sendall(protocol.encode({"answer": guess.encode()}))
    print(prompt is not None, frame(conn)["result"])
    conn.close()
    mine.close()
""".replace("ROOT_DIR", repr(ROOT)).replace("UID", str(UID))


def test_the_service_account_gets_no_password_oracle(pin_env, shape):
    """Whoever runs as pinutild (a compromised service) attaches a connection of its
    own, not the enrolling user's: the proof process reads that connection's
    SO_PEERCRED (the pinutild uid, not USER's) and refuses before PAM, for a wrong
    guess and for the real password alike (the old code said wrong_password, then
    success: a root-run oracle for every account)."""
    shape.start_proof()
    done = subprocess.run([*shape.accounts.prefix(), *shape.as_service, PYTHON, "-I", "-c",
                           _ORACLE, shape.proof_socket, USER, "guess", PASSWORD],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["False permission_denied"] * 2, done.stdout


def test_a_plain_pinutil_enrols_through_the_production_shape_and_logs_in(pin_env, shape):
    """Everything as it is installed: pinutild as its own account with --proof, the
    root proof process, a 0755 `pinutil` run by the user, and the login through libpam
    (tpm_pin backend=auto) by a PAM host run by the user."""
    import json

    from tests.support.pamhost import result_name

    shape.start_proof()
    service = shape.start_service("--proof", shape.proof_socket)
    pin_env.policy_extra["service_socket"] = service.socket
    pin_env.write_policy()
    plain = pin_env.build_launcher(os.path.join(pin_env.dir, "pinutil-plain"), mode=0o755)
    done = subprocess.run([*shape.client(), plain, "--json", "--stdin", "setup"],
                          input=f"{PASSWORD}\n{PIN}\n".encode(), capture_output=True,
                          timeout=120, check=False, env={}, cwd="/")
    assert done.returncode == 0, (done.stderr, service.output())
    assert json.loads(done.stdout.decode().splitlines()[-1])["result"] == "success"
    stack = pin_env.service("unlock", pin_env.tpm_pin_line(backend="auto"))
    report = pin_env.run(stack, user=USER, answers=[PIN], prefix=shape.client())
    assert result_name(report, "auth") == "PAM_SUCCESS", report


def test_the_proof_process_socket_activated_one_per_connection(pin_env, shape):
    """pinutil-proof as its unit runs it: Debian's systemd-socket-activate with
    --accept (Accept=yes), one process per connection, the connection as fd 3."""
    activator = subprocess.Popen(
        [*shape.accounts.prefix(), "systemd-socket-activate", "--accept", "-l",
         shape.proof_socket, "--", PYTHON, "-m", "pinutil.service.proof"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(shape.proof_socket):
            assert activator.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.chmod(shape.proof_socket, 0o666)  # the unit's SocketUser=pinutild, here
        service = shape.start_service("--proof", shape.proof_socket)
        setup = {"verb": "pin-setup", "user": USER}
        wrong = converse(service.socket, setup, ["wrong", PIN], shape.client())
        assert wrong["reply"]["result"] == "wrong_password", wrong
        right = converse(service.socket, setup, [PASSWORD, PIN], shape.client())
        assert right["reply"]["result"] == "success", (right, service.output())
        assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
    finally:
        activator.kill()
        activator.wait()


def test_a_killed_service_ends_the_proof_at_once(pin_env, shape):
    """pinutild killed while the proof process waits for the user's password: the proof
    process sees pinutild's connection close and ends, so the client's connection
    closes then, not after the answer's 60 s; nothing is enrolled."""
    from tests.service.enrol_support import hostile, next_line

    shape.start_proof()
    service = shape.start_service("--proof", shape.proof_socket)
    client = hostile(service.socket, [("send", protocol.encode({"verb": "pin-setup",
                                                                "user": USER})),
                                      ("read",), ("read",)], as_user())
    assert next_line(client)["style"] == "echo_off"
    service.proc.kill()  # the namespace's sh exec()ed setpriv exec()ed pinutild
    service.proc.wait()
    try:
        out, _ = client.communicate(timeout=30)  # half the answer's timeout: not its expiry
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert out.strip() == '{"eof": true}'
    assert HANDLE not in pin_env.enrolled_handles()


def unit_confinement() -> list[str]:
    """setpriv for what systemd/pinutil-proof@.service gives the proof: root (uid 0
    gets its bounding set as its capabilities), only the unit's capability bounding
    set, no inheritable or ambient ones, no new privileges."""
    service = unit("pinutil-proof@.service")["Service"]
    assert service["NoNewPrivileges"] == "yes" and service["AmbientCapabilities"] == ""
    assert "User" not in service and "DynamicUser" not in service
    caps = [name.lower().removeprefix("cap_")
            for name in service["CapabilityBoundingSet"].split()]
    return ["/usr/bin/setpriv",
            "--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in caps)]),
            "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"]


def start_proof_as_its_unit(shape) -> None:
    """The proof in systemd's shape: the socket bound by someone else (the socket unit:
    owned by the service's account, 0600), one proof process per connection with the
    connection as fd 3 (systemd-socket-activate --accept), confined as its unit says
    (it could not even chown its own socket)."""
    log = open(shape.proof_socket + ".log", "ab")  # noqa: SIM115 - closed by stop()
    proc = subprocess.Popen([*shape.accounts.prefix(), "systemd-socket-activate", "--accept",
                             "--listen", shape.proof_socket, *unit_confinement(), PYTHON,
                             "-m", "pinutil.service.proof"], cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            env={"PATH": "/usr/bin:/bin"})
    shape.processes.append((proc, log))
    wait_for_listener(shape.proof_socket, proc)  # root's probe: that proof just ends
    os.chown(shape.proof_socket, SERVICE_UID, SERVICE_UID)
    os.chmod(shape.proof_socket, 0o600)


@pytest.mark.parametrize(("group", "mode"), [("shadow", 0o640), ("root", 0o000)],
                         ids=["debian-0640-root-shadow", "fedora-0000-root-root"])
def test_the_proof_as_its_unit_confines_it_reads_either_shadow_layout(pin_env, shape,
                                                                      group, mode):
    """The proof process with its unit's capabilities checks a password against
    /etc/shadow as Debian ships it and as Fedora and RHEL do (mode 0000: root reads
    it only with CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE). The shadow file is the
    namespace's copy (tests/support/accounts.py), never the machine's. On the old
    unit (no capabilities) every Fedora proof failed: nobody could enrol."""
    shadow = shape.accounts.files["shadow"]
    os.chown(shadow, 0, grp.getgrnam(group).gr_gid)
    os.chmod(shadow, mode)
    start_proof_as_its_unit(shape)
    service = shape.start_service("--proof", shape.proof_socket)
    wrong = converse(service.socket, {"verb": "pin-setup", "user": USER}, ["nope", PIN],
                     shape.client())
    assert wrong["reply"]["result"] == "wrong_password", wrong
    reply = converse(service.socket, {"verb": "pin-setup", "user": USER}, [PASSWORD, PIN],
                     shape.client())
    assert reply["reply"]["result"] == "success", (reply, service.output())
    assert pin_env.swtpm.read_pin_counter(HANDLE) == (0, 3)
