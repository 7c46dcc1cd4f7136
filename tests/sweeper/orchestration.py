"""Helpers for the orchestrator tests: write a small study, wait for its cells, count runs."""

from __future__ import annotations

import json
import textwrap
import time
from collections import Counter
from pathlib import Path

from sweeper.ingest import ingest
from sweeper.run.rundir import RunDir, write_json
from sweeper.store import CellState, Store
from sweeper.study import load_study


def write(
    path: Path,
    task: str,
    base: dict,
    axes: str,
    seeds: int = 1,
    executor: str = "{kind: local, parallelism: 2}",
    extra: str = "",
):
    """Write a study running tests.sweeper.tasks:<task>; `axes` and `extra` are YAML lines."""
    path.write_text(
        "\n".join(
            [
                f"study: {path.stem}",
                f"task: tests.sweeper.tasks:{task}",
                f"base: {json.dumps(base)}",
                "axes:",
                textwrap.indent(axes, "  "),
                f"seeds: {seeds}",
                f"executor: {executor}",
                extra,
                "",
            ]
        )
    )
    return load_study(path)


def submitted(store: Store, cell, run: RunDir, state: str, job_id: str, **extra) -> None:
    """Attempt 1 (token t1) of `cell` on the local executor, as a launch records it, and its attempt.json."""
    store.add_attempt(
        cell.key, executor="local", state=state, token="t1", run_dir=str(run.path), job_id=job_id, **extra
    )
    write_json(run.attempt, {"token": "t1", "number": 1})


def wait_done(store: Store, study, timeout: float = 90) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        statuses = ingest(store, study)
        if not any(s.state in (CellState.SUBMITTING, CellState.PENDING, CellState.RUNNING) for s in statuses):
            return statuses
        time.sleep(0.3)
    raise AssertionError(f"cells still active after {timeout}s: {Counter(s.state for s in statuses)}")


# A search whose random draws (seed 3, one trial at a time) include trials worse than the median
# of the first two: the median pruner stops them part-way through tasks:curve's 12 reports.
PRUNING_SEARCH = """\
metric: val.loss
direction: minimize
trials: 6
sampler: random
seed: 3
parallel: 1
pruner: {kind: median, n_startup_trials: 2}
space: {x: {type: float, low: 0, high: 1}}
"""


def run_search(store: Store, study, timeout: float = 120) -> list:
    """Poll as `launch --wait` does (ingest, prune, ask, submit) until the search settles; the statuses."""
    from sweeper.launch import advance

    def settled():
        statuses, moved = advance(store, study)
        active = any(
            s.state in (CellState.SUBMITTING, CellState.PENDING, CellState.RUNNING) for s in statuses
        )
        return not moved and not active and statuses

    return wait_for(settled, timeout=timeout, what="the search to settle")


def wait_for(pred, timeout: float = 30, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def runs_per_cell(log: Path) -> Counter:
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()
