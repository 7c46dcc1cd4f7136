"""The `sweeper` command line: plan, studies, show."""

from __future__ import annotations

from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sweeper.console import CATEGORIES, STYLE, Options, open_store, out, print_json, study_name, user_errors, err
from sweeper.spec import Study, load_study
from sweeper.store import Plan, category

app = typer.Typer(
    help="Declarative ablation sweeps for vision-transformer research.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
def _version(value: bool) -> None:
    if value:
        out.print(f"sweeper {package_version('sweeper')}")
        raise typer.Exit()


@app.callback()
def main(
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="SWEEPER_DB", help="Results store URL (default sqlite:///results.db)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    Options.db = db


# ----------------------------------------------------------------------------- plan


@app.command()
@user_errors
def plan(
    study_file: Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the totals line.")] = False,
) -> None:
    """Validate and expand a study, record it, and show what a launch would do."""
    study = load_study(study_file)
    with open_store() as store:
        result = store.plan(study)
    for w in study.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if as_json:
        print_json(_plan_json(study, result))
        return
    counts = result.counts()
    totals = ", ".join(f"[{STYLE[c]}]{counts[c]} {c}[/]" for c in CATEGORIES)
    out.print(f"[bold]{study.name}[/]: {len(study.cells)} cells ({totals}); "
              f"{len(result.added)} added to the store, {len(result.kept)} already there")
    if quiet:
        return
    table = Table(title=f"{study.name} by axis value", title_justify="left")
    table.add_column("axis")
    table.add_column("value")
    for c in CATEGORIES[:-1]:
        table.add_column(c, justify="right", style=STYLE[c])
    for axis, labels in result.per_axis.items():
        for i, (label, counter) in enumerate(labels.items()):
            table.add_row(axis if i == 0 else "", label, *(str(counter.get(c, 0) or "·") for c in CATEGORIES[:-1]))
        table.add_section()
    out.print(table)
    if study.baseline:
        out.print(f"baseline: {', '.join(f'{k}={v}' for k, v in study.baseline.items())}")
    if result.orphaned:
        out.print(f"[dim]{len(result.orphaned)} cells recorded for this study are no longer in {study.file}; "
                  "they are kept, not deleted (see `sweeper show`).[/]")


def _plan_json(study: Study, result: Plan) -> dict:
    return {
        "study": study.name,
        "file": study.file,
        "cells": len(study.cells),
        "counts": {c: result.counts()[c] for c in CATEGORIES},
        "added": result.added,
        "kept": len(result.kept),
        "orphaned": result.orphaned,
        "per_axis": {a: {label: dict(c) for label, c in labels.items()} for a, labels in result.per_axis.items()},
        "baseline": study.baseline,
        "warnings": study.warnings,
    }


# ----------------------------------------------------------------------------- studies / show


@app.command()
@user_errors
def studies(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the studies in the store."""
    with open_store() as store:
        rows = store.studies()
    if as_json:
        print_json([r.__dict__ for r in rows])
        return
    if not rows:
        out.print("no studies yet; record one with `sweeper plan STUDY.yaml`")
        return
    table = Table()
    for col in ("study", "file", "cells", *CATEGORIES[:-1], "updated"):
        table.add_column(col, justify="right" if col in ("cells", *CATEGORIES) else "left")
    for r in rows:
        cats = {c: 0 for c in CATEGORIES}
        for state, n in r.states.items():
            cats[category(state)] += n
        table.add_row(r.name, r.file, str(r.cells), *(str(cats[c]) for c in CATEGORIES[:-1]),
                      f"{r.updated_at:%Y-%m-%d %H:%M}")
    out.print(table)


@app.command()
@user_errors
def show(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    state: Annotated[list[str] | None, typer.Option("--state", help="Only cells in these states (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List a study's cells with their labels and states."""
    name = study_name(study)
    with open_store() as store:
        cells = store.cells(name)
    if state:
        wanted = {s.upper() for s in state}
        cells = [c for c in cells if c.state in wanted or (c.orphaned and "ORPHANED" in wanted)]
    if as_json:
        print_json([c.__dict__ for c in cells])
        return
    axes = list(cells[0].labels) if cells else []
    table = Table(title=f"{name}: {len(cells)} cells", title_justify="left")
    table.add_column("key", style="dim")
    for a in axes:
        table.add_column(a)
    table.add_column("state")
    for c in cells:
        cat = "orphaned" if c.orphaned else category(c.state)
        label = c.state.lower() + (" (orphaned)" if c.orphaned else "")
        table.add_row(c.key, *(str(c.labels.get(a, "")) for a in axes), f"[{STYLE[cat]}]{label}[/]")
    out.print(table)
