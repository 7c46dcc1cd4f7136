"""The commands that look at recorded studies: studies, show, status (which ingests first), logs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sweeper.cli.common import (
    CATEGORIES,
    STYLE,
    JsonOption,
    StudyArgument,
    open_store,
    study_spec,
    user_errors,
)
from sweeper.cli.views import search_view, status_view
from sweeper.errors import UserError
from sweeper.report.console import add_columns, out, print_all, print_json, print_table
from sweeper.states import CellState, category


@user_errors
def studies(
    as_json: JsonOption = False,
) -> None:
    """List the studies in the store."""
    with open_store(create=False) as store:
        rows = store.studies()
    if as_json:
        print_json([r.__dict__ for r in rows])
        return
    if not rows:
        out.print("no studies yet; record one with `sweeper plan STUDY.yaml`")
        return
    table = add_columns(
        Table(), ("study", "file", "cells", *CATEGORIES[:-1], "updated"), right=("cells", *CATEGORIES)
    )
    for r in rows:
        cats = {c: 0 for c in CATEGORIES}
        for state, n in r.states.items():
            cats[category(state)] += n
        table.add_row(
            r.name,
            r.file,
            str(r.cells),
            *(str(cats[c]) for c in CATEGORIES[:-1]),
            f"{r.updated_at:%Y-%m-%d %H:%M}",
        )
    print_table(table)


ShownState = StrEnum("ShownState", {s.lower(): s.lower() for s in (*CellState, "ORPHANED")})  # type: ignore[misc]


@user_errors
def show(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    state: Annotated[
        list[ShownState] | None,
        typer.Option("--state", case_sensitive=False, help="Only cells in these states (repeatable)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List a study's cells with their labels and states."""
    from sweeper.study import study_name

    name = study_name(study)
    with open_store(create=False) as store:
        cells = store.cells(name)
    if state:
        wanted = {s.upper() for s in state}
        cells = [c for c in cells if c.state in wanted or (c.orphaned and "ORPHANED" in wanted)]
    if as_json:
        print_json([c.__dict__ for c in cells])
        return
    axes = list(cells[0].labels) if cells else []
    table = Table(title=f"{name}: {len(cells)} cells", title_justify="left")
    add_columns(table, ("key", *axes, "state"), styles={"key": "dim"})
    for c in cells:
        cat = "orphaned" if c.orphaned else category(c.state)
        label = c.state.lower() + (" (orphaned)" if c.orphaned else "")
        table.add_row(c.key, *(str(c.labels.get(a, "")) for a in axes), f"[{STYLE[cat]}]{label}[/]")
    print_table(table)


@user_errors
def status(
    study: StudyArgument,
    as_json: JsonOption = False,
) -> None:
    """Ingest run directories and scheduler states; show progress, heartbeats and failure causes."""
    from sweeper.ingest import ingest

    spec = study_spec(study)
    with open_store(create=False) as store:
        statuses = ingest(store, spec)
        if as_json:
            print_json([s.__dict__ for s in statuses])
            return
        print_all(status_view(spec, statuses, detail=True))
        if spec.search:
            print_table(search_view(store, spec))


class Stream(StrEnum):
    out = "out"
    err = "err"
    both = "both"


@user_errors
def logs(
    cell: Annotated[str, typer.Argument(help="A cell key (or a unique prefix of one).", show_default=False)],
    stream: Annotated[
        Stream, typer.Option("--stream", case_sensitive=False, help="Which log to print.")
    ] = Stream.both,
    tail: Annotated[int | None, typer.Option("--tail", help="Only the last N lines of each.")] = None,
) -> None:
    """Print stdout and stderr of a cell's last attempt."""
    with open_store(create=False) as store:
        key = store.resolve_key(cell)
        attempts = store.attempts(key)
    if not attempts or not attempts[-1].run_dir:
        raise UserError(f"cell {key} has not been submitted yet")
    last = attempts[-1]
    shown = False
    for suffix in ("out", "err"):
        if stream not in (suffix, "both"):
            continue
        path = Path(str(last.run_dir)) / "logs" / f"attempt-{last.number}.{suffix}"
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()
            out.rule(f"{key} attempt {last.number} std{suffix} ({path})")
            out.print("\n".join(lines[-tail:] if tail else lines), markup=False, highlight=False)
            shown = True
    if not shown:
        out.print(f"no logs yet for {key} (attempt {last.number}, {last.state.lower()})")
