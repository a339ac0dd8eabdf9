"""GUARANTEES.md's guarantee table: a row per backend, and every cell backed by a test that
exists (cited as `file.py::test_name` in the row's last column)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GUARANTEES = TESTS.parent / "GUARANTEES.md"
BACKENDS = {
    "memory",
    "local files",
    "S3",
    "GCS",
    "Azure",
    "SFTP (paramiko)",
    "SFTP (sshfs)",
    "FTP",
    "WebDAV",
    "layered URLs",
    "any other fsspec filesystem",
}
COLUMNS = [
    "backend",
    "atomic publish, and how",
    "server-side move",
    "race-free dedup",
    "content type kept",
    "ranged reads",
    "a crash mid-stream leaves",
    "backed by",
]


def table() -> dict[str, dict[str, str]]:
    """The table under "## Guarantees": backend -> column -> cell."""
    section = GUARANTEES.read_text().split("\n## Guarantees\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| backend |")]
    assert len(lines) == 1, "one table whose first column is 'backend' under ## Guarantees"
    start = section.splitlines().index(lines[0])
    rows: list[list[str]] = []
    for line in section.splitlines()[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, _, *body = rows
    assert header == COLUMNS
    return {row[0]: dict(zip(header, row, strict=True)) for row in body}


def test_every_backend_has_a_row_with_every_cell_filled() -> None:
    rows = table()
    assert set(rows) == BACKENDS
    for name, row in rows.items():
        assert all(row.values()), f"{name}: an empty cell"


def test_every_cited_test_exists() -> None:
    defined: dict[str, set[str]] = {}
    for path in [*TESTS.glob("test_*.py"), *TESTS.glob("*/test_*.py")]:
        tree = ast.parse(path.read_text())
        names = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        }
        defined[path.relative_to(TESTS).as_posix()] = names
    for name, row in table().items():
        cited = re.findall(r"`([\w/]+\.py)::(test_\w+)", row["backed by"])
        assert cited, f"{name}: no test cited"
        for module, test in cited:
            assert test in defined.get(module, set()), f"{name}: {module}::{test} does not exist"
