"""The sandbox itself: pypam state that a lower layer holds never reaches the tests.

A machine with pypam installed, or a job beside the tests that made its state, would
otherwise hand its salt-key record to every sandbox, and each enrolment there would
fail (a fresh-clone CI run on a machine shared with other jobs did: 42 errors, "the
TPM's salt key is not the recorded one"). The state comes here from a layer of the
sandbox's own, so that the machine is not touched.
"""
from __future__ import annotations

import os
import tarfile

from tests.support.sandbox import HIDDEN_STATE, Sandbox


def _layer_with_state(tmp_path) -> str:
    """A layer tar holding a file in each place pypam keeps state, plus one that stays."""
    tree = tmp_path / "tree"
    for place in (*HIDDEN_STATE, "/etc/pypam-sandbox-witness"):
        os.makedirs(tree / place.lstrip("/"), exist_ok=True)
        (tree / place.lstrip("/") / "record").write_text("from the machine\n")
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        for top in ("etc", "var"):
            tar.add(tree / top, arcname=top)
    return str(layer)


def test_pypam_state_below_the_sandbox_is_hidden_inside(tmp_path, syslog_capture):
    box = Sandbox(_layer_with_state(tmp_path), syslog_capture)
    try:
        seen = box.run(["sh", "-c", "for p; do [ -e \"$p\" ] && echo \"$p\"; done; true",
                        "sh", *HIDDEN_STATE, "/etc/pypam-sandbox-witness/record"])
        # Only the witness: the layer was mounted, and pypam's places are empty.
        assert seen.stdout.decode().split() == ["/etc/pypam-sandbox-witness/record"]
    finally:
        box.close()
