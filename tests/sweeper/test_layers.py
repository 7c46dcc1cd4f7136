"""The house's rules: SQL only in the store, imports in layers without a circle, a light command line."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
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
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno}: imports {n}"
                for n in names
                if n.split(".")[0] == "sqlalchemy"
            ]
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if SQL.search(line) and "import" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "SQL outside the store:\n" + "\n".join(offenders)


# The layers, bottom to top: a module imports only from its own layer or those below, never above.
LAYERS = [
    ("sweeper.errors", "sweeper.states", "sweeper.task"),
    # a study file: read and checked; the expanded study as data; its steps; expand runs them in order
    ("sweeper.study.loading", "sweeper.study.config", "sweeper.study.schema", "sweeper.study.problems"),
    ("sweeper.study.expanded",),
    ("sweeper.study.axes", "sweeper.study.rules"),
    ("sweeper.study.cells", "sweeper.study.search_plan"),
    ("sweeper.study",),
    ("sweeper.store",),
    ("sweeper.run", "sweeper.scheduler"),
    ("sweeper.search",),
    ("sweeper.ingest", "sweeper.launch", "sweeper.rebuild", "sweeper.progress"),
    ("sweeper.report",),
    ("sweeper.cli", "sweeper.api", "sweeper"),
]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    best = max(
        (
            prefix
            for layer in LAYERS
            for prefix in layer
            if module == prefix or module.startswith(prefix + ".")
        ),
        key=len,
    )
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def _imports() -> dict[str, set[str]]:
    """Module -> the sweeper modules it imports, at the top or inside a function (TYPE_CHECKING too)."""
    modules = {_module(p): p for p in _sources("sweeper")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                }
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_sweeper_imports_follow_the_layers_and_form_no_circle():
    graph = _imports()
    upward = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if _layer(d) > _layer(m)
    ]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)
    # A package's __init__ may gather its modules; none of them imports the package back.
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, "import circle: " + " -> ".join(trail[trail.index(d) :] + [d])
            if d not in state:
                visit(d, trail + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_sweeper_never_imports_model():
    graph = {m: deps for m, deps in _imports().items()}
    assert graph  # the walk found the package
    text = "\n".join(p.read_text() for p in _sources("sweeper"))
    assert not re.search(r"^\s*(from model\b|import model\b)", text, re.M)


HEAVY = [
    "pandas",
    "numpy",
    "matplotlib",
    "optuna",
    "scipy",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql",
    "pydantic",
    "torch",
    "submitit",
    "importlib.metadata",
]


def _heavy_imported(code: str, cwd: Path = ROOT, stdin: str = "") -> list[str]:
    """The HEAVY modules a Python process running `code` has imported when it exits."""
    shown = f"*(m for m in {HEAVY!r} if m in sys.modules)"
    hook = f"import atexit, sys; atexit.register(lambda: print({shown}, file=sys.stderr))"
    done = subprocess.run(
        [sys.executable, "-c", f"{hook}\n{code}"],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | {"PYTHONPATH": str(ROOT), "SWEEPER_DB": str(cwd / "results.db")},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr.splitlines()[-1].split() if done.stderr.strip() else []


def test_the_command_line_starts_without_the_heavy_libraries():
    """`sweeper --help` (and every command, before it runs) imports none of them: each command
    imports what it uses (benchmarks/cli_startup.py times the commands)."""
    assert _heavy_imported("from sweeper.cli import app") == []


SMALL = "study: small\ntask: tests.sweeper.tasks:echo\nbase: {x: 1}\naxes:\n  x: [1, 2]\nseeds: 2\n"


def test_plan_and_status_import_only_the_store_and_the_schema(tmp_path):
    """`plan` and `status` of a study on SQLite need SQLAlchemy and pydantic (typer's own parsing
    imports it too, and it imports importlib.metadata), not the report's, the search's or the jobs'
    libraries, nor PostgreSQL's dialect."""
    (tmp_path / "small.yaml").write_text(SMALL)
    cli = "import sys; from sweeper.cli import app; sys.argv = ['sweeper', *{!r}]; app()"
    for args in (["plan", "small.yaml"], ["status", "small"]):
        imported = set(_heavy_imported(cli.format(args), tmp_path))
        assert imported - {"sqlalchemy", "pydantic", "importlib.metadata"} == set(), args


def test_the_check_child_imports_the_task_not_the_study_schema():
    """plan and launch start `python -m sweeper.run.precheck` to import the task: it pays for the
    task's imports, not for pydantic, SQLAlchemy or submitit."""
    code = (
        "import runpy, sys; sys.argv = ['precheck', 'tests.sweeper.tasks:echo']; "
        "runpy.run_module('sweeper.run.precheck', run_name='__main__')"
    )
    assert _heavy_imported(code, stdin="[]") == []
