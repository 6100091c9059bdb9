"""`pypam enable` and pam.d files reached through symbolic links (review 3, R2).

Writing /etc/pam.d/sudo also changes every service whose file is a link to it (here
sshd, a remote service enable refuses by name), unproven; and writing a service file
that is itself a link replaces the admin's link with a regular file. Both are refused,
naming the links, and nothing is written."""
from __future__ import annotations

import os

import pytest

from pypam.stack import apply, enable
from pypam.stack.modules import assume_present

from .test_enable import enable_args, pypam

COMMON_AUTH = (b"auth [success=1 default=ignore] pam_unix.so nullok\n"
               b"auth requisite pam_deny.so\nauth required pam_permit.so\n")
SUDO = b"@include common-auth\naccount required pam_permit.so\n"


def snapshot(root: str) -> dict[str, tuple]:
    """Every pam.d entry: a link's target, or a file's bytes, owner and mode (an absolute
    link points into `root`'s system, not this machine's: not followed)."""
    pam_d = os.path.join(root, "etc", "pam.d")
    out = {}
    for name in sorted(os.listdir(pam_d)):
        path = os.path.join(pam_d, name)
        st = os.lstat(path)
        if os.path.islink(path):
            out[name] = ("link", os.readlink(path))
        else:
            with open(path, "rb") as f:
                out[name] = (f.read(), st.st_uid, st.st_gid, st.st_mode)
    return out


def _root(tmp_path) -> tuple[str, str]:
    root = str(tmp_path / "root")
    pam_d = os.path.join(root, "etc", "pam.d")
    os.makedirs(pam_d)
    for name, data in (("common-auth", COMMON_AUTH), ("sudo", SUDO)):
        with open(os.path.join(pam_d, name), "wb") as f:
            f.write(data)
    return root, pam_d


@pytest.mark.parametrize("target", ["sudo", "/etc/pam.d/sudo", "../pam.d/sudo"])
def test_a_service_other_services_link_to_is_refused(tmp_path, target):
    root, pam_d = _root(tmp_path)
    os.symlink(target, os.path.join(pam_d, "sshd"))
    before = snapshot(root)
    out = pypam(*enable_args(root, "--service", "sudo", "--apply"), rc=2)
    assert "REFUSED sudo: /etc/pam.d/sshd is a symbolic link to it" in out, out
    assert snapshot(root) == before
    assert os.readlink(os.path.join(pam_d, "sshd")) == target


def test_a_service_whose_file_is_a_link_is_refused(tmp_path):
    root, pam_d = _root(tmp_path)
    os.rename(os.path.join(pam_d, "sudo"), os.path.join(pam_d, "sudo-shared"))
    os.symlink("sudo-shared", os.path.join(pam_d, "sudo"))
    before = snapshot(root)
    out = pypam(*enable_args(root, "--service", "sudo", "--apply"), rc=2)
    assert "REFUSED sudo: /etc/pam.d/sudo is a symbolic link" in out, out
    assert snapshot(root) == before and os.path.islink(os.path.join(pam_d, "sudo"))


def test_a_preset_skips_a_linked_service_and_says_why(tmp_path):
    root, pam_d = _root(tmp_path)
    os.symlink("sudo", os.path.join(pam_d, "sshd"))
    plans = enable.plan(["sudo"], enable.Options(root=root, probe=assume_present),
                        explicit=False)
    assert "symbolic link" in plans[0].skipped and not plans[0].changes


def test_apply_never_replaces_a_link(tmp_path):
    # The writer's own guard, for any plan that would reach a link anyway.
    root, pam_d = _root(tmp_path)
    os.symlink("sudo", os.path.join(pam_d, "sudo-alias"))
    with pytest.raises(apply.ApplyError, match="symbolic link"):
        apply.State(root).apply([("/etc/pam.d/sudo-alias", SUDO, SUDO + b"# x\n")],
                                ["sudo-alias"], ["test"])
    assert os.path.islink(os.path.join(pam_d, "sudo-alias"))
    assert apply.State(root).load() is None
