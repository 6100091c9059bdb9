"""pinutil.securefile: the one trusted-read and atomic-write for pinutil's files (the
callers' own tests cover each file: test_policy, test_salt_key_record,
test_enrolment_record, test_recovery)."""
import os
import stat

import pytest

from pinutil import securefile

NOBODY = 65534


def read(path, **kw):
    options = {"owners": (0,), "forbidden": securefile.GROUP_OR_OTHERS_WRITE,
               "max_bytes": 16, **kw}
    return securefile.read_file(str(path), **options)


def test_read_checks_the_descriptor_it_reads(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 16)
    os.chmod(path, 0o644)
    assert read(path) == b"x" * 16
    assert read(tmp_path / "absent") is None
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(securefile.Refused, match="symbolic link"):
        read(tmp_path / "link")
    with pytest.raises(securefile.Refused, match="larger than 15 bytes"):
        read(path, max_bytes=15)
    os.chmod(path, 0o664)
    with pytest.raises(securefile.Refused, match=r"writable by group or others \(mode 0664\)"):
        read(path)
    os.chmod(path, 0o644)
    os.chown(path, NOBODY, -1)
    with pytest.raises(securefile.Refused, match=f"owned by uid {NOBODY}, must be owned by root"):
        read(path)
    assert read(path, owners=(0, NOBODY)) == b"x" * 16
    with pytest.raises(securefile.Refused, match="not a regular file"):
        read(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(securefile.Refused, match="not a regular file"):  # and no hang
        read(tmp_path / "fifo")


@pytest.mark.parametrize("mode", [0o771, 0o774, 0o772, 0o775])
def test_a_directory_closed_to_others_refuses_any_access_by_them(tmp_path, mode):
    os.chmod(tmp_path, mode)
    with pytest.raises(securefile.Refused, match="open to others"):
        securefile.open_directory(str(tmp_path), owners=(0,), forbidden=securefile.OTHERS_ANY)
    os.chmod(tmp_path, 0o770)
    fd = securefile.open_directory(str(tmp_path), owners=(0,), forbidden=securefile.OTHERS_ANY)
    os.close(fd)


def test_replace_is_atomic_exact_mode_and_never_follows_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "f").symlink_to(victim)
    fd = os.open(tmp_path, securefile.DIRECTORY_FLAGS)
    old_umask = os.umask(0o077)
    try:
        securefile.replace_file(fd, "f", b"new", 0o644)
    finally:
        os.umask(old_umask)
        os.close(fd)
    assert victim.read_bytes() == b"keep"  # the link was replaced, not followed
    st = os.lstat(tmp_path / "f")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert (tmp_path / "f").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["f", "victim"]


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "f").write_bytes(b"old")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "inside").write_bytes(b"")
    fd = os.open(tmp_path, securefile.DIRECTORY_FLAGS)
    try:
        with pytest.raises(OSError):  # a rename over a non-empty directory fails
            securefile.replace_file(fd, "d", b"new", 0o644)
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["d", "f"]
    assert (tmp_path / "f").read_bytes() == b"old"


# --- absolute paths are walked from / (review 3, R4; checklist 25) ---------------------
# A symlink or a directory someone else controls anywhere above the file would decide
# which root-owned file is read: each component is opened O_NOFOLLOW relative to the
# one before, and every ancestor must be owned by root or the euid and not writable by
# group or others unless sticky (/tmp). These fail on the code that checked the last
# component only.

def _tree(tmp_path):
    os.chmod(tmp_path, 0o755)
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    (real / "f").write_bytes(b"root's")
    os.chmod(real / "f", 0o644)
    return real


def test_a_symbolic_link_above_the_file_is_not_followed(tmp_path):
    real = _tree(tmp_path)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(securefile.Refused, match=f"{tmp_path}/link is a symbolic link"):
        read(tmp_path / "link" / "f")
    for directory, says in ((tmp_path / "link" / "sub", f"{tmp_path}/link is a symbolic link"),
                            (tmp_path / "link", "is a symbolic link")):
        with pytest.raises(securefile.Refused, match=says):
            securefile.open_directory(str(directory), owners=(0,),
                                      forbidden=securefile.GROUP_OR_OTHERS_WRITE)
    assert read(real / "f") == b"root's"


def test_a_directory_another_user_owns_above_the_file_is_refused(tmp_path):
    real = _tree(tmp_path)
    os.chown(real, NOBODY, -1)  # they could rename `f` away and put their own there
    with pytest.raises(securefile.Refused, match=f"{real} is owned by uid {NOBODY}"):
        read(real / "f")
    with pytest.raises(securefile.Refused, match=f"{real} is owned by uid {NOBODY}"):
        securefile.open_directory(str(real / "absent"), owners=(0,),
                                  forbidden=securefile.GROUP_OR_OTHERS_WRITE)
    # The file's own trusted owners may own its directories: they choose its bytes anyway.
    assert read(real / "f", owners=(0, NOBODY)) == b"root's"


def test_a_writable_directory_above_the_file_is_refused_unless_sticky(tmp_path):
    real = _tree(tmp_path)
    os.chmod(real, 0o775)
    with pytest.raises(securefile.Refused, match=f"{real} is writable by group or others"):
        read(real / "f")
    os.chmod(real, 0o1777)  # like /tmp: others cannot rename what they do not own
    assert read(real / "f") == b"root's"


def test_a_relative_path_with_a_directory_descriptor_is_not_walked(tmp_path):
    real = _tree(tmp_path)
    os.chown(tmp_path, NOBODY, -1)  # the caller vetted the descriptor already
    fd = os.open(real, securefile.DIRECTORY_FLAGS)
    try:
        assert read("f", dir_fd=fd) == b"root's"
    finally:
        os.close(fd)
