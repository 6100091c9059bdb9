"""The sandbox itself: pypam state that a lower layer holds never reaches the tests.

A machine with pypam installed, or a job beside the tests that made its state, would
otherwise hand its salt-key record to every sandbox, and each enrolment there would
fail (a fresh-clone CI run on a machine shared with other jobs did: 42 errors, "the
TPM's salt key is not the recorded one"). The state comes here from a layer of the
sandbox's own, so that the machine is not touched.
"""
from __future__ import annotations

import os
import shutil
import tarfile

from tests.support.sandbox import HIDDEN_STATE, Sandbox


def _layer_with_state(package_layer: str, tmp_path) -> str:
    """The package layer (iproute2 and the rest, which a minimal root lacks) with a
    file added in each place pypam keeps state, plus one that stays."""
    tree = tmp_path / "tree"
    layer = tmp_path / "layer.tar"
    shutil.copyfile(package_layer, layer)
    with tarfile.open(layer, "a") as tar:
        for place in (*HIDDEN_STATE, "/etc/pypam-sandbox-witness"):
            os.makedirs(tree / place.lstrip("/"), exist_ok=True)
            (tree / place.lstrip("/") / "record").write_text("from the machine\n")
            tar.add(tree / place.lstrip("/"), arcname=place.lstrip("/"))
    return str(layer)


def test_pypam_state_below_the_sandbox_is_hidden_inside(sandbox_layer, tmp_path, syslog_capture):
    box = Sandbox(_layer_with_state(sandbox_layer, tmp_path), syslog_capture)
    try:
        seen = box.run(["sh", "-c", "for p; do [ -e \"$p\" ] && echo \"$p\"; done; true",
                        "sh", *HIDDEN_STATE, "/etc/pypam-sandbox-witness/record"])
        # Only the witness: the layer was mounted, and pypam's places are empty.
        assert seen.stdout.decode().split() == ["/etc/pypam-sandbox-witness/record"]
    finally:
        box.close()
