"""moduledir= is walked from `/` one component at a time with O_NOFOLLOW: a symlink
anywhere in it is refused, even one pointing at a trusted, root-owned module directory.

The attack (issue 9, finding 5): `realpath()` used to run before the owner checks, so a
link that any user can make under /tmp (sticky, so it is "trusted" as an ancestor)
chose which root-owned directory the module came from. The loader must now refuse the
configured path itself, run none of the module's code, and say why in syslog.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import uuid

import pytest

from tests.support.accounts import as_user
from tests.support.pamhost import PAM_SERVICE_ERR, PAM_SUCCESS, run_pam
from tests.support.pypam_stacks import pypam_service, stage_rcs
from tests.test_pypam_errors import TrustedTmp

SERVICE = "pypam-walk"
NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def trusted():
    tmp = TrustedTmp()
    try:
        yield tmp
    finally:
        tmp.remove()


@pytest.fixture
def user_link():
    """A path directly under /tmp where `nobody` will create a symlink; removed after."""
    path = f"/tmp/pypam-userlink-{uuid.uuid4().hex[:12]}"
    try:
        yield path
    finally:
        if os.path.lexists(path):
            os.unlink(path)


def as_nobody(*argv: str) -> None:
    subprocess.run([*as_user(NOBODY.pw_uid, NOBODY.pw_gid), *argv], check=True, timeout=10)


def run_logged(capture, confdir, moduledir: str):
    confdir.write(SERVICE, pypam_service("evil", moduledir=moduledir, kinds=("auth",)))
    report = capture.run_pam(confdir, SERVICE, timeout=20)
    return report, capture.text()


def test_the_real_path_is_accepted(pam_confdir, trusted):
    # Control for every refusal below: the same module by its real path runs.
    trusted.module("evil")
    pam_confdir.write(SERVICE, pypam_service("evil", moduledir=trusted.path, kinds=("auth",)))
    assert stage_rcs(run_pam(pam_confdir, SERVICE)) == [PAM_SUCCESS]
    assert os.path.exists(trusted.marker("evil"))


def test_a_user_made_symlink_under_tmp_to_a_root_owned_dir_is_refused(
        syslog_capture, pam_confdir, trusted, user_link):
    trusted.module("evil")
    as_nobody("ln", "-s", trusted.path, user_link)
    assert os.lstat(user_link).st_uid == NOBODY.pw_uid  # really the user's link
    report, log = run_logged(syslog_capture, pam_confdir, user_link)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert f"{user_link} is a symbolic link" in log
    assert not os.path.exists(trusted.marker("evil"))
    assert report["stdout"] == "" and report["stderr"] == ""


def test_a_root_owned_symlink_in_the_middle_is_refused(syslog_capture, pam_confdir, trusted):
    real = trusted.subdir("real")
    os.mkdir(os.path.join(real, "mods"), 0o755)
    trusted.module("evil", directory=os.path.join(real, "mods"))
    os.symlink(real, os.path.join(trusted.path, "link"))
    moduledir = os.path.join(trusted.path, "link", "mods")
    report, log = run_logged(syslog_capture, pam_confdir, moduledir)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert f"{trusted.path}/link is a symbolic link" in log
    assert not os.path.exists(trusted.marker("evil"))


def test_a_root_owned_symlink_as_the_last_component_is_refused(syslog_capture, pam_confdir,
                                                               trusted):
    real = trusted.subdir("real")
    trusted.module("evil", directory=real)
    link = os.path.join(trusted.path, "link")
    os.symlink(real, link)
    report, log = run_logged(syslog_capture, pam_confdir, link)
    assert stage_rcs(report) == [PAM_SERVICE_ERR]
    assert f"{link} is a symbolic link" in log
    assert not os.path.exists(trusted.marker("evil"))
