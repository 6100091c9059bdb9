"""Debian's own way to change common-auth: pam-auth-update and our profile.

On Debian and Ubuntu, /etc/pam.d/common-* are written by pam-auth-update from the
profiles in /usr/share/pam-configs (our `pypam-tpm-pin`, installed by `make install` and
the package, off until enabled). Editing common-auth by hand would make pam-auth-update
refuse to manage it ever after; `pypam enable --preset local` therefore asks
pam-auth-update itself (`--enable pypam-tpm-pin`), and `pypam disable` asks it to
`--disable` (which also updates its debconf state, so that no later package install
brings the line back).

pam-auth-update has no --root. To show the result without writing anything (the dry
run), and to work on a system below `--root`, it runs in a private mount namespace
(`unshare --mount`, root only) with /etc/pam.d, /var/lib/pam, /var/cache/debconf and
/usr/share/pam-configs bind-mounted from copies (dry run) or from the root's own
directories.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

PROFILE = "pypam-tpm-pin"
PAM_AUTH_UPDATE = "/usr/sbin/pam-auth-update"
COMMON = ("common-auth", "common-account", "common-password", "common-session",
          "common-session-noninteractive")
#: Where pam-auth-update reads and writes, by its own fixed paths.
TREES = ("/etc/pam.d", "/var/lib/pam", "/var/cache/debconf", "/usr/share/pam-configs")
MARK = b"pam-auth-update"          # its files say they are managed by it

_BIND = """
set -e
root=$1; shift
for tree in /etc/pam.d /var/lib/pam /var/cache/debconf /usr/share/pam-configs; do
    mount --bind "$root$tree" "$tree"
done
exec "$@"
"""


class DebianError(Exception):
    pass


def below(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def managed(root: str) -> str | None:
    """Why pam-auth-update cannot do it here (None: it can)."""
    if not os.access(PAM_AUTH_UPDATE, os.X_OK):
        return f"no {PAM_AUTH_UPDATE} (not Debian or Ubuntu)"
    if os.geteuid() != 0:
        return "not root (pam-auth-update, even for the dry run, runs as root)"
    try:
        with open(below(root, "/etc/pam.d/common-auth"), "rb") as f:
            if MARK not in f.read():
                return "/etc/pam.d/common-auth is not managed by pam-auth-update"
    except OSError:
        return "no /etc/pam.d/common-auth"
    for tree in TREES[1:]:
        if not os.path.isdir(below(root, tree)):
            return f"no {tree}"
    if not os.path.isfile(below(root, f"/usr/share/pam-configs/{PROFILE}")):
        return (f"the profile /usr/share/pam-configs/{PROFILE} is not installed "
                "(make install, or the pypam-tpm-pin package)")
    return None


def run(root: str, *args: str) -> subprocess.CompletedProcess:
    """pam-auth-update ARGS on the system at `root` (in a private mount namespace when
    `root` is not /)."""
    argv = [PAM_AUTH_UPDATE, *args]
    if os.path.realpath(root) != "/":
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _BIND,
                "sh", os.path.realpath(root), *argv]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LANG": "C.UTF-8"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    if done.returncode != 0 or "not updating" in done.stderr:
        raise DebianError(f"pam-auth-update {' '.join(args)} failed: "
                          f"{(done.stderr or done.stdout).strip()}")
    return done


def read_common(root: str) -> dict[str, bytes]:
    out = {}
    for name in COMMON:
        try:
            with open(below(root, f"/etc/pam.d/{name}"), "rb") as f:
                out[f"/etc/pam.d/{name}"] = f.read()
        except FileNotFoundError:
            pass
    return out


def preview(root: str, *args: str) -> dict[str, bytes]:
    """The common-* files pam-auth-update ARGS would write, from copies: nothing of the
    system changes."""
    parent = below(root, "/run") if os.path.isdir(below(root, "/run")) else None
    with tempfile.TemporaryDirectory(prefix="pypam-pam-auth-update-", dir=parent) as tmp:
        os.chmod(tmp, 0o700)
        for tree in TREES:
            shutil.copytree(below(root, tree), below(tmp, tree), symlinks=True)
        run(tmp, *args)
        return read_common(tmp)
