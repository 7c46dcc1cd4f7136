"""The house's rules, read from the source: SQL only in the store."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SQL = re.compile(r"\bsqlalchemy\b|\.engine\.(connect|begin)\(|\.session\(\)|\bs\.execute\(")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _in_store(path: Path) -> bool:
    rel = path.relative_to(ROOT / "sweeper").parts if path.is_relative_to(ROOT / "sweeper") else ()
    return rel[:1] in (("store",), ("store.py",))


def test_sql_lives_in_the_store_only():
    """No module of sweeper/ but the store, and no benchmark, imports SQLAlchemy or opens a session."""
    offenders = []
    for path in _sources("sweeper", "benchmarks"):
        if _in_store(path):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: imports {n}" for n in names
                          if n.split(".")[0] == "sqlalchemy"]
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if SQL.search(line) and "import" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "SQL outside the store:\n" + "\n".join(offenders)
