"""The `sweeper` command line: plan, studies, show, launch, rehearse, status, resume, cancel, rebuild, logs,
report, plot."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from sweeper.cli.common import CATEGORIES, STYLE, Options, open_store, user_errors
from sweeper.cli.plot import plot_command
from sweeper.cli.report import report_command
from sweeper.errors import UserError
from sweeper.report.console import (
    add_columns,
    err,
    out,
    print_all,
    print_json,
    print_table,
)
from sweeper.states import ACTIVE, ENDED, UNSUCCESSFUL, CellState, category

if TYPE_CHECKING:  # the commands import what they use: `sweeper --help` imports no pydantic, SQL or pandas
    from sweeper.store import Plan
    from sweeper.study import Study

app = typer.Typer(
    help="Declarative ablation sweeps for vision-transformer research.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal's width
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # only here: every other command would pay for it

        out.print(f"sweeper {version('sweeper')}")
        raise typer.Exit()


@app.callback()
def main(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="SWEEPER_DB",
            help="Results store: a SQLAlchemy URL or a SQLite file path (default results.db).",
        ),
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
        out.print(_search_line(study))
    if result.orphaned:
        out.print(
            f"[dim]{len(result.orphaned)} cells recorded for this study are no longer in {study.file}; "
            "they are kept, not deleted (see `sweeper show`).[/]"
        )


def _search_line(study: Study) -> str:
    plan = study.search_plan
    spec = plan.spec
    finals = f", then the best of each again with seeds {plan.final_seeds}" if plan.final_seeds else ""
    return (
        f"search: {len(plan.groups)} group(s) ({', '.join(plan.group_axes) or 'the whole study'}) x "
        f"{plan.budget} "
        f"trials, {spec.sampler} sampler, {spec.direction} {spec.metric}, {plan.parallel} in flight"
        f"{', pruner ' + spec.pruner.kind if spec.pruner else ''}{finals}"
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


# ----------------------------------------------------------------------------- studies / show


@app.command()
@user_errors
def studies(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
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


@app.command()
@user_errors
def show(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    state: Annotated[
        list[ShownState] | None,
        typer.Option("--state", case_sensitive=False, help="Only cells in these states (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
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


# ------------------------------------------------------------- launch / status / resume / cancel / logs

OnlyOption = Annotated[
    list[str] | None, typer.Option("--only", help="Only cells with axis=value (repeatable).")
]
MaxCellsOption = Annotated[
    int | None, typer.Option("--max-cells", min=1, help="Submit at most this many cells.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StudyArgument = Annotated[str, typer.Argument(help="Study name or YAML file.", show_default=False)]


@app.command()
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
                out.print(_search_line(study) + "; the trials are asked at launch")
        else:
            out.print(
                f"[bold]{study.name}[/]: submitted {len(submission.keys)} cells "
                f"({submission.jobs} jobs, {study.executor.kind})"
                + (f", token {submission.token}" if submission.token else "")
            )
        if wait and not dry_run:
            raise typer.Exit(_watch(store, study, quiet=as_json))


@app.command()
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
            err.print(f"[{n}/{total}] {_labels(row.labels)}: {row.stage}", highlight=False)

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


@app.command()
@user_errors
def status(
    study: StudyArgument,
    as_json: JsonOption = False,
) -> None:
    """Ingest run directories and scheduler states; show progress, heartbeats and failure causes."""
    from sweeper.ingest import ingest

    spec = _study_spec(study)
    with open_store(create=False) as store:
        statuses = ingest(store, spec)
        if as_json:
            print_json([s.__dict__ for s in statuses])
            return
        print_all(_status_view(spec, statuses, detail=True))
        if spec.search:
            print_table(_search_view(store, spec))


@app.command()
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

    spec = _study_spec(study)
    with open_store(create=False) as store:
        submission = do_resume(store, spec, retry_failed=retry_failed, only=only, max_cells=max_cells)
        out.print(f"[bold]{spec.name}[/]: resubmitted {len(submission.keys)} cells")
        for key, why in submission.skipped.items():
            out.print(f"  [dim]{key}[/] not resubmitted: {why}", highlight=False)
        if wait:
            raise typer.Exit(_watch(store, spec))


@app.command()
@user_errors
def cancel(
    study: StudyArgument,
    only: OnlyOption = None,
) -> None:
    """Cancel a study's submitted and running cells (`resume` submits them again)."""
    from sweeper.launch import cancel as do_cancel

    spec = _study_spec(study)
    with open_store(create=False) as store:
        keys = do_cancel(store, spec, only=only)
    out.print(f"[bold]{spec.name}[/]: cancelled {len(keys)} cells")


class Stream(StrEnum):
    out = "out"
    err = "err"
    both = "both"


@app.command()
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
    out.print(_status_view(study, done.statuses, detail=False))


@app.command()
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


def _study_spec(study: str) -> Study:
    """The study as its file says (a name is looked up in the store's record of the file)."""
    from sweeper.study import load_study, parse_study

    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        return load_study(study)
    with open_store(create=False) as store:
        row = store.study_row(study)
    return parse_study(row.spec_text, row.file)


def _status_view(study: Study, statuses: list, *, detail: bool) -> Group:
    counts = Counter(s.state for s in statuses)
    colour = {
        CellState.COMPLETED: "green",
        CellState.RUNNING: "yellow",
        CellState.PENDING: "yellow",
        CellState.FAILED: "red",
        CellState.INTERRUPTED: "red",
    }
    parts: list = [
        f"[bold]{study.name}[/]: {len(statuses)} cells — "
        + ", ".join(
            f"[{colour.get(st, 'white')}]{counts[st]} {st.lower()}[/]" for st in CellState if counts[st]
        )
    ]
    if not detail:
        return Group(*parts)
    by_axis = Table(title="by axis value", title_justify="left")
    columns = ("done", "running", "pending", "failed", "new")
    add_columns(by_axis, ("axis", "value", *columns), right=columns)
    for axis in study.axis_names:
        values: dict[str, Counter] = {}
        for s in statuses:
            # Submitted but not started is "pending", not "running", as in the header line.
            kind = (
                "running"
                if s.state == CellState.RUNNING
                else "pending"
                if s.state in ACTIVE
                else category(s.state)
            )
            values.setdefault(str(s.labels[axis]), Counter())[kind] += 1
        for i, (label, c) in enumerate(values.items()):
            by_axis.add_row(axis if i == 0 else "", label, *(str(c.get(k, 0) or "·") for k in columns))
        by_axis.add_section()
    parts.append(by_axis)
    running = [s for s in statuses if s.state == CellState.RUNNING]
    if running:
        t = add_columns(
            Table(title="running", title_justify="left"),
            ("key", "cell", "attempt", "step", "last values", "heartbeat"),
        )
        for s in running:
            p = s.progress or {}
            shown_values = ", ".join(f"{k}={v:.4g}" for k, v in list(p.get("metrics", {}).items())[:3])
            age = f"{s.heartbeat_age:.0f}s ago" if s.heartbeat_age is not None else "—"
            t.add_row(s.key, _labels(s.labels), str(s.attempt), str(p.get("step", "—")), shown_values, age)
        parts.append(t)
    bad = [s for s in statuses if s.state in UNSUCCESSFUL]
    if bad:
        t = add_columns(
            Table(
                title="failed and interrupted (see `sweeper logs KEY`; `sweeper resume` retries by cause)",
                title_justify="left",
            ),
            ("key", "cell", "attempt", "state", "cause", "detail"),
        )
        for s in bad:
            t.add_row(
                s.key,
                _labels(s.labels),
                str(s.attempt),
                f"[red]{s.state.lower()}[/]",
                s.cause or "",
                s.detail or "",
            )
        parts.append(t)
    return Group(*parts)


def _search_view(store, study: Study) -> Table:
    """Per group: trials run of the budget, by outcome, and the best value so far."""
    from sweeper.search import results

    spec = study.search_plan.spec
    table = Table(title=f"search: {spec.direction} {spec.metric} ({spec.sampler})", title_justify="left")
    numbers = ("trials", "completed", "running", "pruned", "failed", "best", "trial")
    add_columns(table, (*study.search_plan.group_axes, *numbers), right=numbers)
    for g in results(store, study):
        best = g.best
        table.add_row(
            *(str(v) for v in g.labels.values()),
            f"{sum(g.counts.values())}/{g.budget}",
            *(str(g.counts[k] or "·") for k in ("completed", "running", "pruned", "failed")),
            f"{best.value:.4g}" if best else "–",
            str(best.row.number) if best else "–",
        )
    return table


def _labels(labels: dict) -> str:
    return " ".join(f"{v}" for v in labels.values())


def _watch(store, study: Study, *, quiet: bool = False) -> int:
    """`--wait`: follow the cells; a Ctrl-C stops the watch only, as the jobs and local lanes run on
    their own (local lanes in a session of their own, which a closed terminal does not reach either)."""
    try:
        return _follow(store, study, quiet=quiet)
    except KeyboardInterrupt:
        search = " and goes on with the search" if study.search else ""
        err.print(
            f"stopped following {study.name}; its cells go on running. `sweeper status {study.name}` "
            f"shows them; `sweeper launch {study.file} --wait` follows them again{search}.",
            highlight=False,
            soft_wrap=True,
        )
        return 130


def _follow(store, study: Study, *, quiet: bool = False, interval: float = 2.0) -> int:
    """Ingest until no cell is active; exit code 1 if any cell ended unsuccessfully.

    In a terminal, a live view (bar, ETA, the running cells' step / total); elsewhere, plain lines
    (sweeper.progress.Lines) so that a pipe, nohup or CI log never goes minutes without a word.
    """
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from sweeper.launch import advance
    from sweeper.progress import Eta, Lines, eta_text
    from sweeper.search import expected_cells

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    total = expected_cells(study.search) if study.search else len(study.cells)
    bar = progress.add_task(study.name, total=total, eta="")
    eta, lines = Eta(), Lines(study.name)
    live = err.is_terminal and not quiet
    view = Live(console=err, refresh_per_second=2, transient=True, redirect_stdout=False)
    with view if live else nullcontext() as live_view:
        while True:
            statuses, moved = advance(store, study)  # a search prunes, asks and submits here too
            active = moved or any(s.state in ACTIVE for s in statuses)
            eta.update(store, statuses)
            left = eta.remaining(statuses)
            if live_view is not None:
                done = sum(s.state in ENDED for s in statuses)
                progress.update(
                    bar, completed=done, total=max(total, len(statuses)), eta=eta_text(left, True)
                )
                live_view.update(
                    Group(progress, _status_view(study, statuses, detail=False), _running(statuses))
                )
            elif not quiet and (line := lines.line(statuses, left, expected=total)):
                err.print(line, highlight=False, markup=False, soft_wrap=True)
            if not active:
                break
            time.sleep(interval)
    if not quiet:
        print_all(_status_view(study, statuses, detail=True))
        if study.search:
            print_table(_search_view(store, study))
    return 1 if any(s.state in UNSUCCESSFUL for s in statuses) else 0


def _running(statuses: list, shown: int = 8) -> Text:
    """The running cells with their step (of the total their task reports), a few of them."""
    from sweeper.progress import step_total

    running = [s for s in statuses if s.state == CellState.RUNNING]
    text = Text()
    for s in running[:shown]:
        step, total = step_total(s.progress)
        where = (
            "starting"
            if step is None
            else f"step {step}" + (f"/{total} ({step / total:.0%})" if total else "")
        )
        text.append(f"  ⟳ {s.key[:12]} {_labels(s.labels)}  {where}\n", style="dim")
    if len(running) > shown:
        text.append(f"  … {len(running) - shown} more running\n", style="dim")
    return text


app.command("report")(report_command)
app.command("plot")(plot_command)
