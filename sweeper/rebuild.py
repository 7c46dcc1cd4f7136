"""`sweeper rebuild`: the store's record of a study, read back from its run directories.

The store is only an index of the run directories (design.md, "single writer"), so a lost or
damaged results.db is rebuilt from them: each cell's attempts from `attempts/N.json` (how each
ended, written at ingestion), its last attempt from `attempt.json` when no record names it yet
(ingestion then settles it from status.json, result.json and the scheduler, as `status` does),
and its final and intermediate metrics from result.json and metrics.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sweeper.ingest import CellStatus, cell_metrics, ingest, submissions_dir
from sweeper.run.rundir import RunDir, read_dict
from sweeper.run.status import Status
from sweeper.store import ACTIVE, Cause, CellState, Store
from sweeper.study import Study

_FIELDS = ("token", "executor", "job_id", "host", "state", "cause", "detail")
_TIMES = ("submitted_at", "started_at", "ended_at")


@dataclass
class Rebuilt:
    cells: int = 0  # cells with a run directory
    attempts: int = 0
    metrics: int = 0  # metric rows (final and intermediate)
    statuses: list[CellStatus] = field(default_factory=list)


def rebuild(store: Store, study: Study) -> Rebuilt:
    """Replace the store's attempts and metrics of the study's cells by what their run directories say."""
    store.attach(study)
    store.plan(study)
    study.workdir = store.workdir(study)  # the one recorded (a damaged store may still have it)
    workdir = Path(study.workdir)
    out = Rebuilt()
    runs: dict[str, RunDir] = {}
    expected: dict[str, dict] = {}
    for cell in study.cells:
        run = RunDir.of(workdir, cell.key)
        attempt = read_dict(run.attempt)
        if isinstance(attempt.get("number"), int) and attempt["number"] >= 1:  # else never submitted
            runs[cell.key], expected[cell.key] = run, attempt
    stored = store.attempts_of_cells(list(runs))
    attempts = {}
    for key, run in runs.items():
        known = {a.number: a for a in stored.get(key, [])}
        attempts[key] = [
            _attempt(run, n, expected[key], known.get(n), study.executor.kind)
            for n in range(1, expected[key]["number"] + 1)
        ]
    store.restore_attempts(attempts)
    out.cells, out.attempts = len(runs), sum(map(len, attempts.values()))
    out.statuses = ingest(store, study)  # settles the last attempts no record named
    rows, keys = [], []
    for key, a in store.latest_attempts(list(runs)).items():
        if a.state in ACTIVE:
            continue  # its metrics are ingested when it ends
        status = Status.read(runs[key].status, strict=False)
        cell_rows, _ = cell_metrics(key, runs[key], a.number, status if status.token == a.token else Status())
        rows += cell_rows
        keys.append(key)
    store.replace_metrics(keys, rows)
    out.metrics = len(rows)
    return out


def _attempt(run: RunDir, number: int, expected: dict, known, executor: str) -> dict:
    """Attempt `number` from its record; else the store's row; else, for the last, the submission
    attempt.json names (ingestion settles it); an earlier attempt without either is only counted."""
    rec = read_dict(run.outcomes / f"{number}.json")
    if rec.get("state") in set(CellState):
        row = {k: rec.get(k) for k in _FIELDS} | {k: _time(rec.get(k)) for k in _TIMES}
        row["submitted_at"] = row["submitted_at"] or datetime.now(UTC)
        row["token"] = row["token"] or expected.get("token") or "rebuilt"
        row["executor"] = row["executor"] or executor
    elif known is not None:
        row = {k: getattr(known, k) for k in (*_FIELDS, *_TIMES)}
    elif number == expected["number"] and run.cancel.exists() and not run.result.exists():
        row = {
            "token": str(expected.get("token")),
            "executor": executor,
            "state": CellState.CANCELLED,
            "cause": Cause.CANCELLED,
            "detail": "cancelled by sweeper cancel",
            "submitted_at": datetime.now(UTC),
        }
    elif number == expected["number"]:  # submitted: its job, if one is known, is asked as `status` asks it
        token = str(expected.get("token"))
        status = Status.read(run.status, strict=False)
        jobs = read_dict(submissions_dir(run.path.parent.parent) / f"{token}.json").get("jobs")
        job_id = (jobs.get(run.path.name) if isinstance(jobs, dict) else None) or (
            status.job_id if status.token == token else None
        )
        row = {
            "token": token,
            "executor": executor,
            "job_id": job_id,
            "submitted_at": datetime.now(UTC),
            "state": CellState.PENDING if job_id else CellState.SUBMITTING,
        }
    else:
        row = {
            "token": "rebuilt",
            "executor": executor,
            "state": CellState.INTERRUPTED,
            "submitted_at": datetime.now(UTC),
            "detail": "rebuilt: its run directory keeps no record of how this attempt ended",
        }
    return row | {"number": number, "run_dir": str(run.path)}


def _time(ts) -> datetime | None:
    return datetime.fromtimestamp(float(ts), UTC) if isinstance(ts, int | float) else None
