"""Ingestion: run-directory files + one scheduler query per backend -> states in the store.

The CLI process is the only writer of the store; this is where what the jobs wrote becomes
rows. Every unsuccessful attempt gets a cause: the worker's own (EXCEPTION, NAN,
OUT_OF_MEMORY), the scheduler's (PREEMPTED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, CANCELLED), or
an inferred one (KILLED: the worker died mid-cell; LOST: the job ended without running it;
NOT_SUBMITTED: the launch died before its submission went out).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sweeper.run.rundir import (
    RunDir,
    Values,
    describe,
    pid_alive,
    read_dict,
    read_json,
    write_json,
)
from sweeper.run.status import Status
from sweeper.scheduler import JobState, backend
from sweeper.store import (
    ACTIVE,
    ALIVE,
    ENDED,
    JOB_ENDED_BADLY,
    Attempt,
    Cause,
    CellState,
    SchedulerState,
    Store,
)
from sweeper.study import DebugExecutor, LocalExecutor, SlurmExecutor, Study

HEARTBEAT_S = float(os.environ.get("SWEEPER_HEARTBEAT_S", "15"))
STALE_AFTER_S = 4 * HEARTBEAT_S + 30


@dataclass
class CellStatus:
    """One cell as `sweeper status` shows it."""

    key: str
    labels: dict
    state: str
    cause: str | None = None
    detail: str | None = None
    attempt: int = 0
    job_id: str | None = None
    heartbeat_age: float | None = None
    progress: dict | None = None  # the last ctx.report line of a running cell


def submissions_dir(workdir: Path) -> Path:
    return workdir / "submissions"


def launcher_alive(manifest: dict) -> bool:
    """Is the launch that wrote this submission manifest still running (and may still submit)?"""
    if manifest.get("host") != socket.gethostname():
        return time.time() - manifest.get("time", 0) < 600
    return int(manifest.get("pid", 0)) > 0 and pid_alive(int(manifest["pid"]))


def _worker_dead_here(status: Status) -> bool:
    return status.host == socket.gethostname() and status.pid is not None and not pid_alive(status.pid)


def decide(
    attempt_state: str, token: str, run: RunDir, status: Status, job: JobState
) -> tuple[str, str | None, str | None]:
    """The new (state, cause, detail) of an attempt from its run directory (status.json) and the scheduler.

    The scheduler's word on a job comes before a pid check on this host: a requeued job's worker
    is dead while SLURM holds the job PENDING to run it again, and a restarted one is RUNNING
    before its new worker writes status.json.
    """
    if run.result.exists():
        return CellState.COMPLETED, None, None
    mine = status.token == token
    alive = job.state in ALIVE
    # Pruned: stopped by the request, or ended (or never started) after it; a multi-process task
    # runs to its end, and its result (above) wins.
    if run.prune.exists() and (
        mine and status.state == CellState.PRUNED or not alive or status.state != CellState.RUNNING
    ):
        return CellState.PRUNED, Cause.PRUNED, run.prune.read_text().strip()
    if mine and status.state == CellState.FAILED:
        return CellState.FAILED, status.cause or Cause.EXCEPTION, status.error
    if mine and status.state == CellState.INTERRUPTED:
        if status.cause == Cause.TIMEOUT:  # a local lane's own clock, or SLURM's limit once too often
            return (
                CellState.INTERRUPTED,
                Cause.TIMEOUT,
                status.detail
                or (
                    "ran past its timeout_min; resumes from its checkpoint"
                    if status.checkpointed
                    else "ran past its timeout_min and did not save in time"
                ),
            )
        if alive:
            return CellState.PENDING, None, "requeued"
        return CellState.INTERRUPTED, job.cause or Cause.PREEMPTED, "interrupted; resumes from its checkpoint"
    if mine and status.state == CellState.RUNNING:
        return _running(run, status, job)
    # The job has not started this cell (yet).
    if alive:
        return CellState.PENDING, None, None
    if job.state == SchedulerState.UNKNOWN:
        return attempt_state, None, None
    if job.state == SchedulerState.CANCELLED:
        return CellState.CANCELLED, Cause.CANCELLED, "cancelled before it started"
    if job.state in JOB_ENDED_BADLY:
        return CellState.INTERRUPTED, job.cause or Cause.LOST, "the job ended before the cell started"
    return CellState.INTERRUPTED, Cause.LOST, "the job ended without running this cell"


def _running(run: RunDir, status: Status, job: JobState) -> tuple[str, str | None, str | None]:
    """A cell whose worker said RUNNING and wrote nothing since."""
    if job.state == SchedulerState.CANCELLED:
        return CellState.CANCELLED, Cause.CANCELLED, "cancelled while running"
    if job.state in JOB_ENDED_BADLY:
        return CellState.INTERRUPTED, job.cause or Cause.KILLED, "the job ended mid-cell"
    if job.state == SchedulerState.PENDING:  # it ran, so it was requeued: SLURM runs it again
        return CellState.PENDING, None, "requeued"
    if job.state == SchedulerState.RUNNING and not job.shared:
        return CellState.RUNNING, None, None
    if _worker_dead_here(status):
        return CellState.INTERRUPTED, Cause.KILLED, "the worker process died mid-cell"
    if job.state == SchedulerState.RUNNING or (
        job.state == SchedulerState.UNKNOWN and (run.heartbeat_age() or 0) < STALE_AFTER_S
    ):
        return CellState.RUNNING, None, None
    cause = Cause.KILLED if job.state == SchedulerState.FINISHED else Cause.LOST
    return CellState.INTERRUPTED, cause, "no heartbeat from the worker"


def ingest(store: Store, study: Study) -> list[CellStatus]:
    """Bring the store up to date for the study's cells; return their statuses."""
    store.attach(study)
    study.workdir = store.workdir(study)  # the one recorded, whatever the current directory
    workdir = Path(study.workdir)
    cells = {c.key: c for c in study.cells}
    latest = store.latest_attempts(list(cells))
    # An interrupted attempt is read again until a newer one replaces it: judged while its job
    # was between a requeue and its restart, it may yet run again, end (result.json) or be cancelled.
    active = [
        a for a in latest.values() if a.state in ACTIVE or (a.state == CellState.INTERRUPTED and a.job_id)
    ]
    # Submissions a killed launch left behind: adopt the jobs its manifest names, or, if the
    # scheduler call never returned, make the cells new again.
    manifests: dict[str, dict] = {}
    job_ids: dict[int, str | None] = {}
    not_submitted = []
    for a in active:
        if a.state != CellState.SUBMITTING:
            job_ids[a.id] = a.job_id
            continue
        if a.token not in manifests:
            manifests[a.token] = read_dict(submissions_dir(workdir) / f"{a.token}.json")
        if launcher_alive(manifests[a.token]):
            continue  # still submitting
        job_ids[a.id] = manifests[a.token].get("jobs", {}).get(a.cell_key)
        if job_ids[a.id] is None:
            run = _run_dir(a, workdir)
            # Voided: the launch died before preparing the run directory, or no worker of that
            # submission can start the cell now.
            if not run.path.is_dir() or run.claim(a.token, "void"):
                not_submitted.append(a)
                del job_ids[a.id]
            else:  # the scheduler call went out and a worker took the cell: adopt it
                # (a status.json holding no status fails the cell below, saying why)
                job_ids[a.id] = Status.read(run.status, strict=False).job_id
    settled = [a for a in active if a.id in job_ids]
    jobs = _job_states(study, [(a.executor, job_ids[a.id]) for a in settled])
    changes, metric_rows, synced = [], [], []
    for a in settled:
        run = _run_dir(a, workdir)
        job = jobs.get(job_ids[a.id] or "", JobState(SchedulerState.UNKNOWN))
        if (
            a.state == CellState.INTERRUPTED
            and job.state == SchedulerState.UNKNOWN
            and not run.result.exists()
        ):
            continue  # judged, and the scheduler has nothing new to say (sacct down, or the job purged)
        try:  # one bad run directory never stops the others
            change, rows = _settle(a, run, job_ids[a.id], job)
        except Exception as exc:  # noqa: BLE001 - what no reader below foresaw: fail this cell, say why
            detail = f"cannot ingest {run.path}: {type(exc).__name__}: {exc}"
            change = {
                "id": a.id,
                "cell_key": a.cell_key,
                "state": CellState.FAILED,
                "cause": Cause.EXCEPTION,
                "detail": detail,
            }
            rows = None
        if rows is not None:
            metric_rows.extend(rows)
            synced.append(a.cell_key)
        # Only what changed is written: `launch --wait` ingests every 2 s.
        if (change["state"], change["cause"], change["detail"]) != (
            a.state,
            a.cause,
            a.detail,
        ) or change.keys() & {"host", "job_id"}:
            changes.append(change)
    changes.extend(
        {
            "id": a.id,
            "cell_key": a.cell_key,
            "state": CellState.INTERRUPTED,
            "cause": Cause.NOT_SUBMITTED,
            "detail": "the launch was killed before submitting; the next `sweeper launch` submits it",
        }
        for a in not_submitted
    )
    store.update_attempts(changes)
    store.reset_cells([a.cell_key for a in not_submitted])  # never reached the scheduler: new again
    store.replace_metrics(synced, metric_rows)
    return _statuses(store, study, workdir)


def _settle(a: Attempt, run: RunDir, job_id: str | None, job: JobState) -> tuple[dict, list[dict] | None]:
    """The attempt's change, and when it ended, its cell's metrics as the run directory holds them
    (None: nothing to store, as for an attempt judged before that the scheduler still sees so)."""
    status = Status.read(run.status)
    state, cause, detail = decide(a.state, a.token, run, status, job)
    change = {"id": a.id, "cell_key": a.cell_key, "state": state, "cause": cause, "detail": detail}
    if job_id != a.job_id:
        change["job_id"] = job_id
    if status.token == a.token and a.started_at is None and status.started:
        change |= {"host": status.host, "started_at": _utc(status.started)}
    if state not in ENDED:
        if a.ended_at is not None:  # judged ended, and SLURM runs it again
            change["ended_at"] = None
        return change, None
    if a.state in ENDED and (state, cause, detail) == (a.state, a.cause, a.detail):
        return change, None
    change["ended_at"] = _utc(status.ended or time.time())
    rows, fault = cell_metrics(a.cell_key, run, a.number, status if status.token == a.token else Status())
    if state == CellState.COMPLETED and fault:
        change |= {"state": CellState.FAILED, "cause": fault[0], "detail": fault[1]}
    record(run, a, change)
    return change, rows


def record(run: RunDir, a: Attempt, change: dict) -> None:
    """How the attempt ended, beside its run directory (what `sweeper rebuild` reads back)."""
    row = {
        k: getattr(a, k)
        for k in ("number", "token", "executor", "job_id", "host", "state", "cause", "detail")
    }
    row |= {k: v for k, v in change.items() if k in row}
    times = {k: (change.get(k) or getattr(a, k)) for k in ("submitted_at", "started_at", "ended_at")}
    write_json(run.outcomes / f"{a.number}.json", row | {k: _epoch(t) for k, t in times.items()})


def _epoch(t: datetime | None) -> float | None:
    """Seconds since the epoch; a naive datetime (SQLite gives them back so) is UTC."""
    return None if t is None else (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _job_states(study: Study, jobs: list[tuple[str, str | None]]) -> dict[str, JobState]:
    """Scheduler states of (executor kind, job id) pairs: one query per kind."""
    by_kind: dict[str, list[str]] = {}
    for kind, job_id in jobs:
        if job_id:
            by_kind.setdefault(kind, []).append(job_id)
    out: dict[str, JobState] = {}
    for kind, ids in by_kind.items():
        executor = study.executor if study.executor.kind == kind else _default_executor(kind)
        out.update(backend(executor, Path(study.workdir).resolve() / "submitit").states(sorted(set(ids))))
    return out


def _default_executor(kind: str) -> DebugExecutor | LocalExecutor | SlurmExecutor:
    """The backend that made an attempt of `kind` with its default settings (the study's executor
    has changed kind since): each reads its own job ids."""
    return {"slurm": SlurmExecutor, "local": LocalExecutor, "debug": DebugExecutor}[kind](kind=kind)


def cell_metrics(
    key: str, run: RunDir, attempt: int, status: Status
) -> tuple[list[dict], tuple[str, str] | None]:
    """The cell's metric rows as its run directory holds them, and what is wrong with `attempt`'s values.

    Final values: result.json, else the finite values a NAN failure kept (status.json); intermediate
    ones: metrics.jsonl, one per (metric, step), a resumed attempt's replacing the one before it.
    Only finite numbers become rows. A fault is (cause, detail): NAN for a NaN or infinite value,
    EXCEPTION for a result.json that is unreadable or holds something other than numbers.
    """
    fault = None
    if run.result.exists():
        result = read_json(run.result)
        if not isinstance(result, dict):
            fault = (
                Cause.EXCEPTION,
                "result.json is unreadable or not a JSON object; delete it and resume --retry-failed",
            )
        values = Values.of(result)
        if values.nonfinite:
            fault = (Cause.NAN, f"result.json: {describe(values.nonfinite)} (the finite values are kept)")
        elif values.invalid:
            fault = (
                Cause.EXCEPTION,
                f"result.json: {describe(values.invalid)}; expected a number for each metric",
            )
    else:
        values = Values.of(status.result) if status.state == CellState.FAILED else Values()
    rows = [
        {"cell_key": key, "attempt": attempt, "stage": "final", "name": n, "step": None, "value": v}
        for n, v in values.finite.items()
    ]
    reported = run.reported()
    rows.extend(
        {"cell_key": key, "attempt": by or attempt, "stage": "report", "name": n, "step": step, "value": v}
        for (n, step), (by, v) in reported.values.items()
    )
    nonfinite = reported.nonfinite.get(attempt) or reported.nonfinite.get(None)
    if fault is None and nonfinite:
        fault = (Cause.NAN, f"it reported {nonfinite} (the finite values are kept)")
    return rows, fault


def _statuses(store: Store, study: Study, workdir: Path) -> list[CellStatus]:
    latest = store.latest_attempts([c.key for c in study.cells])
    out = []
    for cell in study.cells:
        a = latest.get(cell.key)
        if a is None:
            out.append(CellStatus(cell.key, cell.labels, CellState.PLANNED))
            continue
        state = CellState.PLANNED if a.cause == Cause.NOT_SUBMITTED else a.state
        row = CellStatus(cell.key, cell.labels, state, a.cause, a.detail, a.number, a.job_id)
        if a.state == CellState.RUNNING:
            run = RunDir.of(workdir, cell.key)
            row.heartbeat_age, row.progress = run.heartbeat_age(), run.last_report()
        out.append(row)
    return out


def _run_dir(a: Attempt, workdir: Path) -> RunDir:
    """The attempt's run directory as recorded (an attempt recorded without one: its cell's)."""
    return RunDir(Path(a.run_dir)) if a.run_dir else RunDir.of(workdir, a.cell_key)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)
