"""`sweeper report`: the command; what it shows is built in sweeper.report."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweeper.cli.common import open_store, user_errors
from sweeper.errors import UserError
from sweeper.report.console import out, print_table
from sweeper.report.options import EXTENSIONS, Format
from sweeper.states import ACTIVE


def _write(parts: list[str | Table], path: Path | None) -> None:
    """To the terminal, a pipe or a file; a table is never cut to a width (see print_table)."""
    if path is None:
        for part in parts:
            if isinstance(part, Table):
                print_table(part)
            else:
                out.file.write(part)
        return
    with path.open("w") as fh:
        for i, part in enumerate(parts):
            if isinstance(part, Table):
                print_table(part, Console(file=fh, color_system=None))
            else:
                fh.write(("\n" if i else "") + part)


@user_errors
def report_command(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    rows: Annotated[
        list[str] | None,
        typer.Option(
            "--rows", help="Axes of the table's rows (repeatable; default: the named-variants axis)."
        ),
    ] = None,
    cols: Annotated[
        list[str] | None,
        typer.Option("--cols", help="Axes of the column groups (repeatable; default: the other axes)."),
    ] = None,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            "--pool",
            help="Average over this axis with the seeds (repeatable); an axis in neither --rows nor "
            "--cols must be named here.",
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="Metric name glob (repeatable; default: every final metric but analysis.*).",
        ),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option("--format", "-f", help="Output format (default: from --out's extension, else rich)."),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of the terminal.")
    ] = None,
    coverage: Annotated[
        bool,
        typer.Option(
            "--coverage", help="Only the coverage view: done / running / failed / missing per group."
        ),
    ] = False,
    final: Annotated[
        bool,
        typer.Option(
            "--final", help="A search study: only the ablation table of the best configurations' final seeds."
        ),
    ] = False,
    trials: Annotated[
        bool,
        typer.Option(
            "--trials", help="A search study: every trial with its hyperparameters and value, best first."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable (as --format json).")] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="With --out FILE.html: rewrite the page as results arrive (it reloads itself in a "
            "browser) until no cell is active.",
        ),
    ] = False,
) -> None:
    """Ablation table: mean ± std over seeds, paired deltas vs the baseline, partial cells flagged.

    For a study with a search: per group the best trial and its hyperparameters, then the
    ablation table over the final seeds of each group's best configuration.
    """
    # Imported here, not with the app: every other command would pay for pandas.
    from sweeper.report.scope import final_scope, search_study
    from sweeper.report.search import search_view, trials_view
    from sweeper.report.statistics import build
    from sweeper.report.tables import RICH_MAX_ROWS, complete, render, render_coverage
    from sweeper.search import results
    from sweeper.study import study_name

    if as_json and fmt not in (None, Format.json):
        raise UserError(f"--json and --format {fmt} ask for two formats; give one")
    if as_json:
        fmt = Format.json
    if fmt is None:
        fmt = EXTENSIONS.get(out_file.suffix.lower(), Format.rich) if out_file else Format.rich
    if fmt == Format.html and (coverage or final or trials):
        raise UserError(
            "--format html is the whole study on one page; it takes no --coverage, --final or --trials"
        )
    if watch and (fmt != Format.html or out_file is None):
        raise UserError("--watch rewrites an HTML page as results arrive: give --out FILE.html")
    if fmt == Format.html:
        html_command(study_name(study), rows, cols or None, metric, pool or (), out_file, watch)
        return
    parts: list[str | Table] = []
    with open_store(create=False) as store:
        name = study_name(study)
        searched = search_study(store, name)
        keys = axes = directions = None
        if trials and searched is None:
            raise UserError(f"--trials: study '{name}' has no search block")
        if final and searched is None:
            raise UserError(
                f"--final: study '{name}' has no search block, so no final seeds; "
                f"its table is `sweeper report {name}` without --final"
            )
        if trials and searched is not None:
            _write([trials_view(store, searched, fmt)], out_file)
            return
        if searched is not None:
            groups = results(store, searched)
            if not final and not coverage:
                parts.append(search_view(store, searched, groups, fmt))
            keys, axes, directions = final_scope(store, searched, groups, required=final or coverage)
        summary = None
        if keys is None or keys and (final or coverage or fmt not in (Format.csv, Format.json)):
            summary = build(
                store,
                name,
                rows,
                cols or None,
                metric,
                keys=keys,
                axes=axes,
                directions=directions,
                pool=pool or (),
            )
    max_rows = RICH_MAX_ROWS if out_file is None and out.is_terminal else None
    if summary is not None and coverage:
        parts = [render_coverage(summary, fmt, max_rows)]
    elif summary is not None:
        if fmt == Format.rich and out_file is None and not complete(summary):
            parts.append(render_coverage(summary, fmt, max_rows))
        parts.append(render(summary, fmt, max_rows))
    _write(parts, out_file)
    if out_file is not None:
        out.print(f"wrote {out_file} ({fmt})", highlight=False)


def html_command(name: str, rows, cols, metrics, pool, out_file: Path | None, watch: bool) -> None:
    """Write the page (or print it); with `watch`, ingest and rewrite it every WATCH_S seconds (atomically,
    so a browser never reads half a page) until no cell of the study is active."""
    from sweeper.ingest import ingest
    from sweeper.report import html
    from sweeper.study import parse_study

    while True:
        with open_store(create=False) as store:
            active = False
            if watch:
                row = store.study_row(name)
                active = any(s.state in ACTIVE for s in ingest(store, parse_study(row.spec_text, row.file)))
            text = html.render(store, name, rows, cols, metrics, pool, html.WATCH_S if active else None)
        if out_file is None:
            out.file.write(text)
            return
        try:  # whole or not at all: a browser reloading it never reads half a page
            tmp = out_file.with_name(f".{out_file.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, out_file)
        except OSError as e:
            raise UserError(f"--out {out_file}: cannot write it ({e.strerror or e})") from None
        when = datetime.now().strftime("%H:%M:%S")
        again = f" at {when}; rewritten every {html.WATCH_S} s while cells run" if active else ""
        out.print(f"wrote {out_file} (html){again}", highlight=False)
        if not active:
            return
        try:
            time.sleep(html.WATCH_S)
        except KeyboardInterrupt:
            out.print(f"stopped watching; {out_file} holds the page as of {when}", highlight=False)
            return
