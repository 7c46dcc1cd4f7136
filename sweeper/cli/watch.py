"""`--wait` (launch, resume): follow a study's cells until none is active."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING

from rich.console import Group

from sweeper.cli.views import running_cells, search_view, status_view
from sweeper.report.console import err, print_all, print_table
from sweeper.states import ACTIVE, ENDED, UNSUCCESSFUL

if TYPE_CHECKING:
    from sweeper.study import Study


def watch(store, study: Study, *, quiet: bool = False) -> int:
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
                    Group(progress, status_view(study, statuses, detail=False), running_cells(statuses))
                )
            elif not quiet and (line := lines.line(statuses, left, expected=total)):
                err.print(line, highlight=False, markup=False, soft_wrap=True)
            if not active:
                break
            time.sleep(interval)
    if not quiet:
        print_all(status_view(study, statuses, detail=True))
        if study.search:
            print_table(search_view(store, study))
    return 1 if any(s.state in UNSUCCESSFUL for s in statuses) else 0
