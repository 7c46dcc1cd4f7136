"""`sweeper plot`: the command; the figures are built in sweeper.report.plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sweeper.cli.common import open_store, user_errors
from sweeper.errors import UserError
from sweeper.report.console import out
from sweeper.report.options import SUFFIXES, ErrorBar


@user_errors
def plot_command(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    x: Annotated[
        str,
        typer.Option(
            "--x", help="Axis on the x axis, 'block' for per-block metrics, or 'step' for training curves."
        ),
    ],
    y: Annotated[
        str, typer.Option("--y", help="Metric name or glob (with --x block: the per-block metrics).")
    ],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Output file: .png, .pdf or .svg.")],
    hue: Annotated[str | None, typer.Option("--hue", help="Axis whose labels are separate lines.")] = None,
    col: Annotated[str | None, typer.Option("--col", help="Axis whose labels are separate panels.")] = None,
    error: Annotated[
        ErrorBar, typer.Option("--error", help="Error bars: std over seeds, or the 95 % t interval.")
    ] = ErrorBar.std,
) -> None:
    """Plot a metric against an axis (or the block index), mean over seeds with error bars; with
    --x step, the values reported during training as curves with a band over seeds.

    For a study with a search: over the final seeds of each group's best configuration; with
    a searched parameter as --x, every completed trial as a point (the search's landscape).
    """
    from sweeper.report.plot import (  # matplotlib and pandas: for this command only
        make_figure,
        save,
    )

    if out_file.suffix.lower() not in SUFFIXES:
        raise UserError(f"--out {out_file}: expected a {', '.join(SUFFIXES)} file")
    if not out_file.parent.is_dir():
        raise UserError(f"--out {out_file}: there is no directory {out_file.parent}; create it first")
    with open_store(create=False) as store:
        fig = make_figure(store, study, x, y, hue, col, error)
    save(fig, out_file)
    out.print(f"wrote {out_file}", highlight=False)
