"""The service's state directory (pinutil/pin/state.py) and the move into it
(pinutil/pin/migrate.py): who may own what, what root's writes leave behind, and that
a kill at any write point of the move, or of a record's replacement, loses no
enrolment.

The service user is the account `pinutild`; this machine has none (and tests never
add accounts), so these tests name an existing system account, `daemon`, as the
service user (state.SERVICE_USER) inside their own processes.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from pinutil.pin import enrolment, salt_key, state
from pinutil.pin.enrolment import EnrolmentRecord, RecordError
from pinutil.pin.policy import parse_policy
from tests.support.accounts import AS_NOBODY, as_user
from tests.support.pin_env import ROOT

SERVICE = "daemon"  # stands in for pinutild (see the module docstring)
NAME = bytes.fromhex("000b" + "ab" * 32)
UIDS = (0, 1001, 1002)


@pytest.fixture
def as_service(monkeypatch):
    monkeypatch.setattr(state, "SERVICE_USER", SERVICE)
    return pwd.getpwnam(SERVICE)


@pytest.fixture
def service_state_dir(as_service):
    """The service's own state directory (0700) with no `enrolments` yet, in a
    directory the service's processes can reach (tmp_path's parents are root's 0700)."""
    base = tempfile.mkdtemp(prefix="pypam-state-", dir="/tmp")
    try:
        os.chmod(base, 0o755)
        yield make_dir(f"{base}/state", as_service.pw_uid, as_service.pw_gid, 0o700)
    finally:
        shutil.rmtree(base)


def as_the_service(service) -> list[str]:
    return as_user(service.pw_uid, service.pw_gid)


def assert_the_service_made_its_records(service, state_dir: str) -> None:
    """`enrolments` is the service's own 0700 directory, holding user 1001's record."""
    st = os.stat(f"{state_dir}/enrolments")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
        (service.pw_uid, service.pw_gid, 0o700)
    assert enrolment.read(f"{state_dir}/enrolments", 1001) == record(1001)


def record(uid: int, user: str | None = None) -> EnrolmentRecord:
    return EnrolmentRecord(uid=uid, user=user or f"user{uid}", nv_index=0x01000000 + uid,
                           enrolled="2026-01-01T00:00:00Z")


def make_dir(path: str, uid: int, gid: int, mode: int) -> str:
    os.mkdir(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def write(path: str, text: str, uid: int = 0, gid: int = 0, mode: int = 0o640) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


# --- the policy says where -------------------------------------------------------

def test_the_policy_derives_every_path_from_state_dir():
    default = parse_policy("")
    assert default.state_dir == "/var/lib/pinutild"
    assert (default.enrolment_dir, default.salt_key_record) == \
        ("/var/lib/pinutild/enrolments", "/var/lib/pinutild/salt_key")
    moved = parse_policy("state_dir = /srv/pin/\n")
    assert (moved.enrolment_dir, moved.salt_key_record) == \
        ("/srv/pin/enrolments", "/srv/pin/salt_key")


# --- trust -----------------------------------------------------------------------

def test_records_of_the_service_user_are_trusted_only_when_no_one_else_may_write(
        tmp_path, as_service):
    service = as_service
    state_dir = make_dir(str(tmp_path / "state"), service.pw_uid, service.pw_gid, 0o700)
    records = make_dir(f"{state_dir}/enrolments", service.pw_uid, service.pw_gid, 0o700)
    write(f"{records}/1001", record(1001).text(), service.pw_uid, service.pw_gid)
    write(f"{state_dir}/salt_key", NAME.hex() + "\n", service.pw_uid, service.pw_gid, 0o644)
    assert enrolment.read(records, 1001) == record(1001)
    assert salt_key.load(f"{state_dir}/salt_key") == NAME

    os.chmod(f"{records}/1001", 0o660)  # the service's, but its group may write
    with pytest.raises(RecordError, match="writable by group or others"):
        enrolment.read(records, 1001)
    os.chmod(f"{records}/1001", 0o640)
    os.chmod(f"{state_dir}/salt_key", 0o646)
    with pytest.raises(salt_key.TpmUnavailable, match="writable by group or others"):
        salt_key.load(f"{state_dir}/salt_key")
    os.chmod(f"{state_dir}/salt_key", 0o644)
    # A state directory that others may write: they could swap `enrolments` itself.
    os.chmod(state_dir, 0o770)
    with pytest.raises(RecordError, match="state directory .* writable by group or others"):
        enrolment.read(records, 1001)
    with pytest.raises(salt_key.TpmUnavailable, match="writable by group or others"):
        salt_key.load(f"{state_dir}/salt_key")


def test_without_the_service_user_its_files_are_refused(tmp_path, monkeypatch):
    """The same files, but the account is not the service user: refused (only root,
    the service user and a record's own uid are trusted)."""
    monkeypatch.setattr(state, "SERVICE_USER", "no-such-account-pypam")
    daemon = pwd.getpwnam(SERVICE)
    state_dir = make_dir(str(tmp_path / "state"), 0, 0, 0o755)
    records = make_dir(f"{state_dir}/enrolments", 0, 0, 0o700)
    write(f"{records}/1001", record(1001).text(), daemon.pw_uid, daemon.pw_gid)
    with pytest.raises(RecordError, match=f"owned by uid {daemon.pw_uid}"):
        enrolment.read(records, 1001)
    os.chown(state_dir, daemon.pw_uid, daemon.pw_gid)
    with pytest.raises(RecordError, match="state directory"):
        enrolment.read(records, 1001)


def test_a_record_may_not_be_reached_through_a_symlinked_state_dir(tmp_path):
    real = make_dir(str(tmp_path / "real"), 0, 0, 0o755)
    make_dir(f"{real}/enrolments", 0, 0, 0o700)
    write(f"{real}/enrolments/1001", record(1001).text())
    os.symlink(real, tmp_path / "link")
    with pytest.raises(RecordError, match="state directory .*link is a symbolic link"):
        enrolment.read(str(tmp_path / "link" / "enrolments"), 1001)


# --- what root's writes leave --------------------------------------------------------

def test_root_makes_the_service_layout_and_gives_it_its_files(tmp_path, as_service):
    service = as_service
    state_dir = str(tmp_path / "var" / "state")
    enrolment.write(f"{state_dir}/enrolments", record(1001), as_root=True)
    salt_key.save(f"{state_dir}/salt_key", NAME)
    for path, mode in ((state_dir, 0o700), (f"{state_dir}/enrolments", 0o700),
                       (f"{state_dir}/enrolments/1001", 0o640), (f"{state_dir}/salt_key", 0o644)):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == \
            (service.pw_uid, service.pw_gid, mode), path


def test_root_makes_the_fallback_layout_without_the_service_user(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "SERVICE_USER", "no-such-account-pypam")
    tss = grp.getgrnam("tss").gr_gid
    state_dir = str(tmp_path / "state")
    enrolment.write(f"{state_dir}/enrolments", record(1001), as_root=True)
    got = {path: (st.st_uid, st.st_gid, st.st_mode & 0o7777) for path, st in (
        (p, os.lstat(p)) for p in (state_dir, f"{state_dir}/enrolments",
                                   f"{state_dir}/enrolments/1001"))}
    assert got == {state_dir: (0, tss, 0o750), f"{state_dir}/enrolments": (0, tss, 0o770),
                   f"{state_dir}/enrolments/1001": (0, tss, 0o640)}


_AS_SERVICE_WRITE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pinutil.pin import enrolment, state
    state.SERVICE_USER = sys.argv[3]
    enrolment.write(sys.argv[2], enrolment.EnrolmentRecord(
        uid=1001, user="user1001", nv_index=0x010003e9, enrolled="2026-01-01T00:00:00Z"),
        as_root=False)
""")


def test_the_service_makes_its_records_directory_in_its_own_state_directory(
        as_service, service_state_dir):
    """Installed, the state directory exists but `enrolments` may not (nobody enrolled
    yet): the service, not root, makes it in its own directory; a user cannot."""
    state_dir = service_state_dir
    other = subprocess.run([*AS_NOBODY, sys.executable, "-c", _AS_SERVICE_WRITE, ROOT,
                            f"{state_dir}/enrolments", SERVICE],
                           capture_output=True, text=True, timeout=60, check=False)
    assert other.returncode != 0 and not os.path.exists(f"{state_dir}/enrolments")
    done = subprocess.run([*as_the_service(as_service), sys.executable, "-c",
                           _AS_SERVICE_WRITE, ROOT, f"{state_dir}/enrolments", SERVICE],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert_the_service_made_its_records(as_service, state_dir)


# The service's unit (systemd/pinutild.service) has SystemCallFilter=~@privileged with
# SystemCallErrorNumber=EPERM: chown is refused. The same filter, loaded with
# libseccomp (a dependency of systemd) before the service's write: review F5.
_SECCOMP = textwrap.dedent("""
    import ctypes, errno, sys
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    SCMP_ACT_ALLOW, SCMP_ACT_ERRNO = 0x7fff0000, 0x00050000
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    for name in sys.argv[4].split(","):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        assert nr >= 0 and lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO | errno.EPERM, nr, 0) == 0
    assert lib.seccomp_load(ctx) == 0
""")
_CHOWN = "chown,fchown,fchownat,lchown"
_CHMOD = "chmod,fchmod,fchmodat"


def _as_service_with_filter(service, state_dir: str, refused: str):
    script = _SECCOMP + _AS_SERVICE_WRITE.replace(
        "enrolment.write(", "try:\n    enrolment.write(").replace(
        "    as_root=False)", "    as_root=False)\n"
        "except enrolment.RecordError as e:\n    sys.exit(f'RecordError: {e}')")
    return subprocess.run([*as_the_service(service), sys.executable, "-c", script, ROOT,
                           f"{state_dir}/enrolments", SERVICE, refused],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_service_makes_its_records_directory_though_its_unit_refuses_chown(
        as_service, service_state_dir):
    """The first enrolment after the state directory was recreated without `enrolments`
    (systemctl clean, no postinst): the service makes it without chown (old code:
    PermissionError, "internal error"); a failure there is a clear RecordError."""
    state_dir = service_state_dir
    refused = _as_service_with_filter(as_service, state_dir, f"{_CHOWN},{_CHMOD}")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("RecordError: enrolment records: cannot set the "
                                     "owner and mode of enrolments"), refused.stderr
    os.rmdir(f"{state_dir}/enrolments")
    done = _as_service_with_filter(as_service, state_dir, _CHOWN)
    assert done.returncode == 0, done.stderr
    assert_the_service_made_its_records(as_service, state_dir)


@pytest.mark.parametrize("swap", ["symlink", "directory"])
def test_root_changes_nothing_through_what_the_state_dirs_owner_swaps_in(
        tmp_path, monkeypatch, as_service, swap):
    """Root makes `enrolments` in the service's directory; its owner wins the race and
    swaps the new directory for a symlink to a file of root's (or for a directory of
    its own) between root's mkdir and the rest: root must not chmod the symlink's
    target (old code: chmod by name, the target became 0700; review F4)."""
    service = as_service
    state_dir = make_dir(str(tmp_path / "state"), service.pw_uid, service.pw_gid, 0o700)
    victim = str(tmp_path / "victim")
    write(victim, "root's\n", mode=0o644)
    real_mkdir = os.mkdir

    def mkdir_then_swapped(name, mode=0o777, *, dir_fd=None):
        real_mkdir(name, mode, dir_fd=dir_fd)
        if name != state.ENROLMENTS:
            return
        os.rename(name, "moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        if swap == "symlink":
            os.symlink(victim, name, dir_fd=dir_fd)
        else:
            real_mkdir(name, 0o755, dir_fd=dir_fd)
            os.chown(name, service.pw_uid, service.pw_gid, dir_fd=dir_fd)

    monkeypatch.setattr(state.os, "mkdir", mkdir_then_swapped)
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        state.ensure_child_dir(fd, state_dir, state.ENROLMENTS)
        raised = None
    except state.StateError as e:
        raised = str(e)
    finally:
        os.close(fd)
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o644)
    assert raised is not None and "replaced while it was being made" in raised
    if swap == "directory":
        st = os.lstat(f"{state_dir}/enrolments")
        assert (st.st_uid, st.st_mode & 0o7777) == (service.pw_uid, 0o755)


# --- the move from the old places ---------------------------------------------------

class Old:
    """The old layout in a temporary directory: records in legacy/enrolments (root:tss
    0770), the salt key record next to the policy; the state directory not made yet."""

    def __init__(self, base: str) -> None:
        tss = grp.getgrnam("tss").gr_gid
        self.etc = make_dir(f"{base}/etc", 0, 0, 0o755)
        self.policy = f"{self.etc}/policy"
        self.state_dir = f"{base}/lib/state"
        write(self.policy, f"state_dir = {self.state_dir}\n", mode=0o644)
        make_dir(f"{base}/lib", 0, 0, 0o755)
        self.legacy = make_dir(f"{base}/lib/legacy", 0, 0, 0o755)
        self.records = make_dir(f"{self.legacy}/enrolments", 0, tss, 0o770)
        for uid in UIDS:  # root's own records and one a user's set-gid setup wrote
            owner = 1002 if uid == 1002 else 0
            write(f"{self.records}/{uid}", record(uid).text(), owner, tss)
        write(f"{self.etc}/salt_key", NAME.hex() + "\n", mode=0o644)

    def run(self, kill_at: int = 0, service: str = "no-such-account-pypam"):
        return subprocess.run([sys.executable, "-c", _MOVE, ROOT, self.policy, self.records,
                               str(kill_at), service],
                              capture_output=True, text=True, timeout=60, check=False)

    def found(self) -> dict:
        """Each uid's record and the salt key, from the new place or else the old (the
        records without the salt key they are bound to after the move: a kill may come
        between the move and the binding; the complete run checks the binding)."""
        policy = parse_policy(f"state_dir = {self.state_dir}\n")
        found = {}
        for uid in UIDS:
            new = enrolment.read(policy.enrolment_dir, uid) if os.path.exists(
                policy.enrolment_dir) else None
            old = enrolment.read(self.records, uid) if os.path.exists(self.records) else None
            found[uid] = (new or old).replace(salt_key=None)
        new_key = salt_key.load_if_present(policy.salt_key_record) if os.path.exists(
            self.state_dir) else None
        found["salt_key"] = new_key or salt_key.load_if_present(f"{self.etc}/salt_key")
        return found


def _killed_at_change(*names: str) -> str:
    """A child script's lines after which the child SIGKILLs itself just before its
    `kill_at`-th call (a variable the script sets first; 0: never) of the os functions
    `names` that changes a file or a directory (an open without O_CREAT reads: not
    counted)."""
    return textwrap.dedent(f"""
        import os, signal
        calls = [0]
        def counted(name, function):
            def call(*args, **kwargs):
                if name == "open" and not args[1] & os.O_CREAT:  # reading changes nothing
                    return function(*args, **kwargs)
                calls[0] += 1
                if calls[0] == int(kill_at):
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(*args, **kwargs)
            return call
        for name in {names!r}:
            setattr(os, name, counted(name, getattr(os, name)))
    """)


# In a child: migrate(), killed (SIGKILL, by itself) just before its N-th call that
# changes a file or a directory: every step of the atomic writes, every unlink, mkdir.
_MOVE = textwrap.dedent("""
    import sys
    root, policy_path, legacy, kill_at, service = sys.argv[1:]
    sys.path.insert(0, root)
    from pinutil.pin import migrate, state
    from pinutil.pin.policy import load_policy
    state.SERVICE_USER = service
""") + _killed_at_change("open", "write", "fsync", "rename", "unlink", "rmdir", "mkdir",
                         "chown", "fchown", "chmod", "fchmod") + textwrap.dedent("""
    import json
    print(json.dumps(migrate.migrate(load_policy(policy_path), policy_path, legacy)))
""")


def expected() -> dict:
    return {**{uid: record(uid) for uid in UIDS}, "salt_key": NAME}


@pytest.mark.parametrize("service", ["no-such-account-pypam", SERVICE])
def test_the_move_is_complete_and_removes_the_old_files(tmp_path, monkeypatch, service):
    monkeypatch.setattr(state, "SERVICE_USER", service)
    old = Old(str(tmp_path))
    done = old.run(service=service)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["moved"]) == 4 and report["problems"] == report["kept"] == []
    assert old.found() == expected()
    assert not os.path.exists(old.records) and not os.path.exists(f"{old.etc}/salt_key")
    # The moved records, written before records named their salt key, are bound to it.
    assert report["bound"] == [f"user{uid}" for uid in UIDS]
    policy = parse_policy(f"state_dir = {old.state_dir}\n")
    for uid in UIDS:
        assert enrolment.read(policy.enrolment_dir, uid) == record(uid).replace(salt_key=NAME)
    again = old.run(service=service)  # nothing more to do
    assert json.loads(again.stdout) == {"moved": [], "kept": [], "bound": [], "problems": []}


@pytest.mark.parametrize("service", ["no-such-account-pypam", SERVICE])
def test_a_kill_at_any_write_point_of_the_move_loses_nothing(tmp_path, monkeypatch, service):
    monkeypatch.setattr(state, "SERVICE_USER", service)
    points = 0
    while True:
        points += 1
        base = tmp_path / str(points)
        base.mkdir()
        old = Old(str(base))
        done = old.run(kill_at=points, service=service)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert old.found() == expected(), f"killed at write point {points}"
        finished = old.run(service=service)  # running it again finishes the move
        assert finished.returncode == 0, finished.stderr
        assert old.found() == expected()
        assert not os.path.exists(old.records) and not os.path.exists(f"{old.etc}/salt_key")
    # state dir, enrolments, 4 files x (create, chown, chmod, write, fsync, rename,
    # fsync, unlink), rmdir, ...: every one of them was a kill point above.
    assert points > 30, points


def test_untrustworthy_old_records_stay_where_they_are(tmp_path):
    old = Old(str(tmp_path))
    os.chmod(f"{old.records}/1001", 0o666)       # anyone could have written it
    os.chown(f"{old.records}/1002", 1003, 1003)  # not the owner's, not root's
    report = json.loads(old.run().stdout)
    assert sorted(p.split(":")[0] for p in report["problems"]) == \
        [f"{old.records}/1001", f"{old.records}/1002"]
    policy = parse_policy(f"state_dir = {old.state_dir}\n")
    assert enrolment.read(policy.enrolment_dir, 0) == record(0).replace(salt_key=NAME)
    for uid in (1001, 1002):
        assert enrolment.read(policy.enrolment_dir, uid) is None
        assert os.path.exists(f"{old.records}/{uid}")


def test_a_record_already_in_the_new_place_wins(tmp_path):
    old = Old(str(tmp_path))
    policy = parse_policy(f"state_dir = {old.state_dir}\n")
    newer = record(1001, "user1001-renamed")
    enrolment.write(policy.enrolment_dir, newer, as_root=True)
    report = json.loads(old.run().stdout)
    assert any(item.startswith(f"{policy.enrolment_dir}/1001") for item in report["kept"])
    assert enrolment.read(policy.enrolment_dir, 1001) == newer.replace(salt_key=NAME)
    assert not os.path.exists(old.records)


# --- a kill while a record is replaced -------------------------------------------------

_REPLACE = textwrap.dedent("""
    import sys
    root, directory, kill_at = sys.argv[1:]
    sys.path.insert(0, root)
    from pinutil.pin import enrolment
""") + _killed_at_change("open", "write", "fsync", "rename", "fchown", "fchmod") + \
    textwrap.dedent("""
    enrolment.write(directory, enrolment.EnrolmentRecord(
        uid=1001, user="new-name", nv_index=0x010003e9, enrolled="2026-02-02T00:00:00Z"),
        as_root=True)
""")


def test_a_kill_while_a_record_is_replaced_leaves_the_old_or_the_new_one(tmp_path):
    state_dir = make_dir(str(tmp_path / "state"), 0, 0, 0o755)
    records = f"{state_dir}/enrolments"
    enrolment.write(records, record(1001), as_root=True)
    seen = set()
    for point in range(1, 20):
        done = subprocess.run([sys.executable, "-c", _REPLACE, ROOT, records, str(point)],
                              capture_output=True, text=True, timeout=60, check=False)
        found = enrolment.read(records, 1001)
        assert found is not None and found.user in ("user1001", "new-name"), point
        seen.add(found.user)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr
        enrolment.write(records, record(1001), as_root=True)  # the old one again
    assert seen == {"user1001", "new-name"} and point > 4


# --- `pinutil migrate-state`, then a login, through the real parts -----------------------

_OLD_PLACES = """
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /var/lib   # this namespace's /var/lib only: the machine's is untouched
install -d -m 0755 /var/lib/pinpam
install -d -m 0770 -g tss /var/lib/pinpam/enrolments
cp -p "$1"/enrolments/0 /var/lib/pinpam/enrolments/0
shift
"$@"
test ! -e /var/lib/pinpam   # moved, and the emptied old directories removed
"""


def test_pinutil_migrate_state_then_the_pin_logs_in(pin_env):
    """An enrolment of before (records in /var/lib/pinpam/enrolments, the salt key next
    to the policy): with the new `state_dir` no PIN is offered until root runs
    `pinutil migrate-state`; then the same PIN logs in. A user cannot run it."""
    from tests.support.pamhost import result_name

    pin_env.enrol("root", "2580")  # in the environment's directory, as before
    state_dir = os.path.join(pin_env.dir, "state")
    pin_env.write_policy(state_dir=state_dir)
    svc = pin_env.service("login", pin_env.tpm_pin_line(backend="direct"))
    before = pin_env.run(svc, user="root", answers=["2580"])
    assert result_name(before, "auth") == "PAM_AUTHINFO_UNAVAIL" and before["conv_calls"] == 0

    refused = subprocess.run([*AS_NOBODY, pin_env.build_launcher(), "migrate-state"],
                             capture_output=True, text=True, timeout=60, check=False, env={})
    assert refused.returncode != 0 and "only root may move" in refused.stderr, refused.stderr
    assert not os.path.exists(state_dir)

    done = subprocess.run(["unshare", "-m", "sh", "-c", _OLD_PLACES, "sh", pin_env.dir,
                           *pin_env.pinutil_command("--json", "migrate-state")],
                          capture_output=True, text=True, timeout=60, check=False, env={})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert len(report["moved"]) == 2 and report["problems"] == [], report
    assert not os.path.exists(os.path.join(pin_env.dir, "salt_key"))
    after = pin_env.run(svc, user="root", answers=["2580"])
    assert result_name(after, "auth") == "PAM_SUCCESS"
    assert pin_env.counter("root") == (0, 3)
