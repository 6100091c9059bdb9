"""`pinutil-proof --listen PATH` gives its fresh socket to --peer-user without following
a symbolic link (review 2 G12): if PATH's directory is that account's, it may swap the
socket for a symlink between bind() and the chown, and root would chown the link's
target. The won race is simulated (os.chown wrapped: the swap happens right before
it), as for review F4; the rest is the real code, as root. Fails on the code before:
the victim, root's file, became nobody's."""
from __future__ import annotations

import os

from pinutil.service import proof

NOBODY = 65534


def test_a_socket_swapped_for_a_symlink_before_the_chown_is_not_followed(
        tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    rundir = tmp_path / "run"
    rundir.mkdir()
    os.chown(rundir, NOBODY, NOBODY)  # the peer user's runtime directory
    path = str(rundir / "proof.sock")
    real_chown = os.chown

    def racing_chown(target, uid, gid, *args, **kwargs):
        if target == path:  # what the directory's owner does in the window
            os.rename(path, path + ".moved")
            os.symlink(victim, path)
        return real_chown(target, uid, gid, *args, **kwargs)

    monkeypatch.setattr(os, "chown", racing_chown)
    sock = proof._bound(path, "nobody")
    sock.close()
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0), "root chowned the symlink's target"
