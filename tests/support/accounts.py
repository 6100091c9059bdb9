"""Private accounts and a private /etc/pam.d, only inside a mount namespace.

`Accounts` keeps copies of /etc/passwd, /etc/group and /etc/shadow (same owners and
modes as the originals) and a pam.d directory in a temporary directory. `prefix()`
gives the argv prefix that runs a command in a new mount namespace (the one of
`syslog_capture`, so its syslog is captured too) in which those files are bind-mounted
over the real ones. Users added here exist only inside; the machine's own files are
never written. pam_unix and its set-gid helper unix_chkpwd read the copies, so a
test user's password is checked by the real code.

The pam.d directory starts with the shipped examples/pam.d/pinutil and an `other`
that permits everything: a pinutil that fell back to `other` would accept anyone.
"""
from __future__ import annotations

import ctypes
import grp
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_SERVICE = os.path.join(ROOT, "examples", "pam.d", "pinutil")
PERMIT_ALL = "auth required pam_permit.so\naccount required pam_permit.so\n"

# Inside the namespace (as root): bind the copies over the real files, then exec.
_ENTER = ('set -e; mount --bind "$1" /etc/pam.d; mount --bind "$2" /etc/passwd; '
          'mount --bind "$3" /etc/group; mount --bind "$4" /etc/shadow; shift 4; exec "$@"')


def sha512_crypt(password: str) -> str:
    """A $6$ hash by the system's libcrypt (what pam_unix verifies with)."""
    libcrypt = ctypes.CDLL("libcrypt.so.1")
    libcrypt.crypt.restype = ctypes.c_char_p
    libcrypt.crypt.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
    salt = b"$6$" + os.urandom(9).hex().encode()
    return libcrypt.crypt(password.encode(), salt).decode()


class Accounts:
    def __init__(self, base_prefix: list[str]) -> None:
        self.base_prefix = base_prefix
        self.dir = tempfile.mkdtemp(prefix="pypam-accounts-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.pamd = os.path.join(self.dir, "pam.d")
        os.mkdir(self.pamd, 0o755)
        os.chmod(self.pamd, 0o755)
        shutil.copyfile(SHIPPED_SERVICE, os.path.join(self.pamd, "pinutil"))
        self.write_service("other", PERMIT_ALL)
        self.files = {}
        for name in ("passwd", "group", "shadow"):
            path = os.path.join(self.dir, name)
            shutil.copyfile(f"/etc/{name}", path)
            st = os.stat(f"/etc/{name}")
            os.chown(path, st.st_uid, st.st_gid)
            os.chmod(path, st.st_mode & 0o7777)
            self.files[name] = path

    def write_service(self, name: str, text: str) -> None:
        path = os.path.join(self.pamd, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)

    def remove_service(self, name: str) -> None:
        os.unlink(os.path.join(self.pamd, name))

    def _append(self, name: str, line: str) -> None:
        with open(self.files[name], "a") as f:
            f.write(line + "\n")

    def add_user(self, name: str, uid: int, password: str) -> None:
        """A user (and its own group) that exists only inside the namespace."""
        self._append("passwd", f"{name}:x:{uid}:{uid}::/nonexistent:/bin/sh")
        self._append("group", f"{name}:x:{uid}:")
        self._append("shadow", f"{name}:{sha512_crypt(password)}:19000:0:99999:7:::")

    def remove_user(self, name: str) -> None:
        """Like userdel: the account goes, nothing else is touched."""
        for file in ("passwd", "group", "shadow"):
            path = self.files[file]
            with open(path) as f:
                kept = [line for line in f if line.split(":", 1)[0] != name]
            with open(path, "w") as f:
                f.writelines(kept)

    def prefix(self) -> list[str]:
        """Run the command after this inside the namespace with these accounts."""
        return [*self.base_prefix, "sh", "-c", _ENTER, "sh", self.pamd,
                self.files["passwd"], self.files["group"], self.files["shadow"]]

    def as_user(self, uid: int) -> list[str]:
        """setpriv to `uid` (its own group, no supplementary groups), after prefix()."""
        return as_user(uid)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# The policy's defaults: where the master key's authValue goes, the state directory,
# and where records were before it.
SYSTEM_MASTER_KEY_AUTH = "/var/lib/pinutild/master_key_auth"
SYSTEM_PATHS = {SYSTEM_MASTER_KEY_AUTH: "master_key_auth_file", "/var/lib/pinutild": "state_dir",
                "/var/lib/pinpam/enrolments": "state_dir"}


@pytest.fixture(scope="session", autouse=True)
def no_records_on_the_machine() -> Iterator[None]:
    """A test that enrols (or makes a master key) with a policy lacking `state_dir` (or
    `master_key_auth_file`) would write records into the machine's own /var/lib: fail
    the session loudly instead of doing it silently."""
    existed = {path for path in SYSTEM_PATHS if os.path.exists(path)}
    yield
    for path, option in SYSTEM_PATHS.items():
        if path not in existed and os.path.exists(path):
            raise AssertionError(f"a test created {path}: give its policy a {option} in "
                                 "its own temporary directory")


@pytest.fixture
def accounts(syslog_capture) -> Iterator[Accounts]:
    made = Accounts(syslog_capture.prefix)
    try:
        yield made
    finally:
        made.remove()


def as_user(uid: int | str, gid: int | str | None = None) -> list[str]:
    """The command after this runs as `uid` and group `gid` (numbers or names; the group
    defaults to the same number or name: a user's own group), with no supplementary
    groups. Every test that drops to another account builds its setpriv line here."""
    gid = uid if gid is None else gid
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


#: The command after this runs as nobody:nogroup, with no supplementary groups: a user
#: who owns nothing and may do nothing.
AS_NOBODY = tuple(as_user("nobody", "nogroup"))
#: The command after this runs as a set-uid-root program that nobody started (su, sudo,
#: before they switch): real uid nobody, effective uid root.
SU_LIKE = ("setpriv", "--ruid=nobody", "--euid=0", "--")


def setgid_tss_launcher(pin_env) -> str:
    """A copy of the pinutil launcher, setgid tss like the installed one, whose built-in
    policy is `pin_env`'s; the swtpm socket opened to it like /dev/tpmrm0 is to tss."""
    path = pin_env.build_launcher(os.path.join(pin_env.dir, "pinutil-setgid"))
    os.chown(path, 0, grp.getgrnam("tss").gr_gid)
    os.chmod(path, 0o2755)
    os.chmod(pin_env.swtpm.state_dir, 0o711)  # the sockets themselves are 0666
    # The installed layout of the enrolment directory: root:tss 0770.
    os.makedirs(pin_env.enrolment_dir, exist_ok=True)
    os.chown(pin_env.enrolment_dir, 0, grp.getgrnam("tss").gr_gid)
    os.chmod(pin_env.enrolment_dir, 0o770)
    return path
