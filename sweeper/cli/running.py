"""The commands that record and run a study: plan, launch, rehearse, resume, cancel, rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sweeper.cli.common import (
    CATEGORIES,
    STYLE,
    JsonOption,
    MaxCellsOption,
    OnlyOption,
    StudyArgument,
    open_store,
    study_spec,
    user_errors,
)
from sweeper.cli.views import labels_text, search_line, status_view
from sweeper.cli.watch import watch
from sweeper.report.console import add_columns, err, out, print_json, print_table

if TYPE_CHECKING:  # the commands import what they use: `sweeper --help` imports no pydantic, SQL or pandas
    from sweeper.store import Plan
    from sweeper.study import Study


@user_errors
def plan(
    study_file: Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)],
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the totals line.")] = False,
) -> None:
    """Validate, expand and check a study (task and `check`), record it and show what a launch would do."""
    from sweeper.run.precheck import precheck
    from sweeper.study import load_study

    study = load_study(study_file)
    precheck(study, list(study.search.templates.values()) if study.search else study.cells)
    with open_store() as store:
        result = store.plan(store.attach(study))
    for w in study.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if as_json:
        print_json(_plan_json(study, result))
        return
    counts = result.counts()
    totals = ", ".join(f"[{STYLE[c]}]{counts[c]} {c}[/]" for c in CATEGORIES)
    out.print(
        f"[bold]{study.name}[/]: {len(study.cells)} cells ({totals}); "
        f"{len(result.added)} added to the store, {len(result.kept)} already there"
    )
    if quiet:
        return
    table = Table(title=f"{study.name} by axis value", title_justify="left")
    add_columns(table, ("axis", "value", *CATEGORIES[:-1]), right=CATEGORIES, styles=STYLE)
    for axis, labels in result.per_axis.items():
        for i, (label, counter) in enumerate(labels.items()):
            table.add_row(
                axis if i == 0 else "", label, *(str(counter.get(c, 0) or "·") for c in CATEGORIES[:-1])
            )
        table.add_section()
    print_table(table)
    if study.baseline:
        out.print(f"baseline: {', '.join(f'{k}={v}' for k, v in study.baseline.items())}")
    if study.search:
        out.print(search_line(study))
    if result.orphaned:
        out.print(
            f"[dim]{len(result.orphaned)} cells recorded for this study are no longer in {study.file}; "
            "they are kept, not deleted (see `sweeper show`).[/]"
        )


def _plan_json(study: Study, result: Plan) -> dict:
    counts = result.counts()
    return {
        "study": study.name,
        "file": study.file,
        "cells": len(study.cells),
        "counts": {c: counts[c] for c in CATEGORIES},
        "added": result.added,
        "kept": len(result.kept),
        "orphaned": result.orphaned,
        "per_axis": {
            a: {label: dict(c) for label, c in labels.items()} for a, labels in result.per_axis.items()
        },
        "baseline": study.baseline,
        "warnings": study.warnings,
    }


@user_errors
def launch(
    study_file: Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)],
    only: OnlyOption = None,
    max_cells: MaxCellsOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be submitted; submit nothing.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the cells until they finish.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Submit every cell of a study that is neither done nor running (idempotent)."""
    from sweeper.launch import launch as do_launch
    from sweeper.study import load_study

    study = load_study(study_file)
    for w in study.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    with open_store() as store:
        submission, chosen = do_launch(store, study, only=only, max_cells=max_cells, dry_run=dry_run)
        if as_json:
            print_json(
                {
                    "study": study.name,
                    "dry_run": dry_run,
                    "token": submission.token,
                    "submitted": submission.keys,
                    "would_submit": [c.key for c in chosen] if dry_run else None,
                    "jobs": submission.jobs,
                }
            )
        elif dry_run:
            out.print(
                f"[bold]{study.name}[/]: would submit {len(chosen)} cells with the {study.executor.kind} "
                "executor"
            )
            if study.search:
                out.print(search_line(study) + "; the trials are asked at launch")
        else:
            out.print(
                f"[bold]{study.name}[/]: submitted {len(submission.keys)} cells "
                f"({submission.jobs} jobs, {study.executor.kind})"
                + (f", token {submission.token}" if submission.token else "")
            )
        if wait and not dry_run:
            raise typer.Exit(watch(store, study, quiet=as_json))


@user_errors
def rehearse(
    study_file: Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)],
    only: OnlyOption = None,
    cover: Annotated[
        list[str] | None,
        typer.Option(
            "--cover",
            help="Only a few cells holding every label of every axis and every combination of "
            "these comma-separated axes (repeatable), e.g. --cover model.scale,framework.name.",
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps per training config.")] = 2,
    max_processes: Annotated[
        int | None,
        typer.Option(
            "--max-processes",
            min=1,
            help="At most this many processes per config (1: multi-process configs in one process, "
            "where memory is short). Default: as many as the hook asks.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run every distinct config of a study a few real steps here, on CPU, before submitting it.

    The study's `rehearse:` hook rehearses each distinct training config (the real model, framework,
    crops and schedules; a checkpoint saved and restored) and each evaluation, on generated fixtures where
    a dataset root does not exist here. A config whose job runs several processes (nodes x tasks_per_node
    under slurm) is rehearsed by the processes its hook asks for (procs), started as torchrun starts ranks;
    its peak RSS is their sum. Nothing is recorded; exit 1 if any unit fails."""
    from sweeper.launch import parse_only
    from sweeper.run.rehearse import as_json as rows_json
    from sweeper.run.rehearse import rehearse as do_rehearse
    from sweeper.run.rehearse import select
    from sweeper.study import load_study

    study = load_study(study_file)
    cells = select(study, parse_only(study, only), cover)

    def progress(n: int, total: int, row) -> None:
        if not as_json:
            err.print(f"[{n}/{total}] {labels_text(row.labels)}: {row.stage}", highlight=False)

    rows = do_rehearse(study, cells, steps=steps, max_processes=max_processes, progress=progress)
    failed = sum(not r.ok for r in rows)
    if as_json:
        print_json({"study": study.name, "steps": steps, "units": rows_json(rows)})
    else:
        axes = [a for a in study.axis_names if a != "seed"]
        numbers = ("configs", "procs", "s/step", "peak RSS", "seconds")
        title = f"{study.name}: rehearsal of {len(cells)} configs in {len(rows)} units, {steps} steps"
        table = Table(title=title, title_justify="left")
        add_columns(table, (*axes, *numbers, "stage", "result", "error"), right=numbers)
        for r in rows:
            per_step = r.figures.get("seconds_per_step")
            table.add_row(
                *(r.labels[a] for a in axes),
                str(r.cells),
                str(r.processes),
                f"{per_step:.2f}" if per_step else "–",
                f"{r.peak_rss_mb / 1024:.1f} GB",
                f"{r.seconds:.0f}",
                r.stage,
                "[green]pass[/]" if r.ok else "[red]FAIL[/]",
                r.error,
            )
        print_table(table)
        out.print(f"{len(rows) - failed} passed, {failed} failed; nothing was recorded")
    raise typer.Exit(1 if failed else 0)


@user_errors
def resume(
    study: StudyArgument,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry cells whose task raised or hit NaN.")
    ] = False,
    only: OnlyOption = None,
    max_cells: MaxCellsOption = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the cells until they finish.")] = False,
) -> None:
    """Resubmit interrupted, failed and lost cells by the policy of their cause."""
    from sweeper.launch import resume as do_resume

    spec = study_spec(study)
    with open_store(create=False) as store:
        submission = do_resume(store, spec, retry_failed=retry_failed, only=only, max_cells=max_cells)
        out.print(f"[bold]{spec.name}[/]: resubmitted {len(submission.keys)} cells")
        for key, why in submission.skipped.items():
            out.print(f"  [dim]{key}[/] not resubmitted: {why}", highlight=False)
        if wait:
            raise typer.Exit(watch(store, spec))


@user_errors
def cancel(
    study: StudyArgument,
    only: OnlyOption = None,
) -> None:
    """Cancel a study's submitted and running cells (`resume` submits them again)."""
    from sweeper.launch import cancel as do_cancel

    spec = study_spec(study)
    with open_store(create=False) as store:
        keys = do_cancel(store, spec, only=only)
    out.print(f"[bold]{spec.name}[/]: cancelled {len(keys)} cells")


@user_errors
def rebuild(
    study_file: Annotated[Path, typer.Argument(help="The study YAML file.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Re-ingest a study's run directories into a fresh or damaged store (attempts, causes, metrics)."""
    from sweeper.rebuild import rebuild as do_rebuild
    from sweeper.study import load_study

    study = load_study(study_file)
    with open_store() as store:
        done = do_rebuild(store, study)
    if as_json:
        print_json(
            {"study": study.name, "cells": done.cells, "attempts": done.attempts, "metrics": done.metrics}
        )
        return
    out.print(
        f"[bold]{study.name}[/]: rebuilt {done.cells} cells from {Path(study.workdir) / 'cells'} "
        f"({done.attempts} attempts, {done.metrics} metric values)",
        highlight=False,
        soft_wrap=True,
    )
    out.print(status_view(study, done.statuses, detail=False))
