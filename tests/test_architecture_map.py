"""docs/ARCHITECTURE.md's layer map names every package there is, so that it cannot
silently fall behind the tree (it holds no counts that would: see its "Size")."""
from __future__ import annotations

import os
import re

from tests.support.pin_env import ROOT


def layer_map() -> str:
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index("## The layers")
    return text[start:text.index("\n## ", start + 1)]


def subpackages(top: str) -> list[str]:
    return sorted(name for name in os.listdir(os.path.join(ROOT, top))
                  if os.path.isfile(os.path.join(ROOT, top, name, "__init__.py")))


def test_the_layer_map_names_every_subpackage():
    drawn = layer_map()
    missing = [f"{top}/{name}/" for top in ("pypam", "pinutil") for name in subpackages(top)
               if not re.search(rf"(^|[\s/]){re.escape(name)}/", drawn, re.MULTILINE)]
    assert missing == []


def test_the_map_holds_no_line_counts():
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md"), encoding="utf-8") as f:
        text = f.read()
    assert not re.search(r"\d[\d,]* lines|\| \d[\d,]+ \|", text)
