"""ARCHITECTURE.md's walk through the code points at the lines it names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
ANCHOR = re.compile(r"\[`([\w.]+)`\]\((lakery_fsspec/[\w/]+\.py)#L(\d+)\)")


def test_every_anchor_points_at_what_it_names() -> None:
    anchors = ANCHOR.findall((ROOT / "ARCHITECTURE.md").read_text())
    assert len(anchors) > 30
    wrong = []
    for name, path, line in anchors:
        lines = (ROOT / path).read_text().splitlines()
        at = int(line) - 1
        # The definition's line, or the decorator's just above it.
        window = " ".join(lines[at : at + 3])
        last = name.rsplit(".", 1)[-1]
        if not re.search(rf"\b(def|class) {re.escape(last)}\b", window):
            wrong.append(f"{path}#L{line} is not {name}: {lines[at].strip()!r}")
    assert not wrong, "\n".join(wrong)
