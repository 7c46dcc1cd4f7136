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

from sweeper.rundir import RunDir, read_json
from sweeper.scheduler import JobState, backend
from sweeper.spec import LocalExecutor, SlurmExecutor, Study
from sweeper.store import ACTIVE, CellState, Store

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


def launcher_alive(workdir: Path, token: str) -> bool:
    """Is the launch that wrote this submission's intent still running (and may still submit)?"""
    manifest = read_json(submissions_dir(workdir) / f"{token}.json") or {}
    if manifest.get("host") != socket.gethostname():
        return time.time() - manifest.get("time", 0) < 600
    try:
        os.kill(int(manifest.get("pid", 0)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return manifest.get("pid", 0) > 0


def _pid_dead_here(status: dict) -> bool:
    if status.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    try:
        with open(f"/proc/{status['pid']}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def decide(attempt_state: str, token: str, run: RunDir, job: JobState) -> tuple[str, str | None, str | None]:
    """The new (state, cause, detail) of an attempt from what its run directory and scheduler say."""
    if run.result.exists():
        return CellState.COMPLETED, None, None
    status = read_json(run.status) or {}
    mine = status.get("token") == token
    alive = job.state in {"PENDING", "RUNNING"}
    if mine and status.get("state") == "FAILED":
        return CellState.FAILED, status.get("cause", "EXCEPTION"), status.get("error")
    if mine and status.get("state") == "INTERRUPTED":
        if alive:
            return CellState.PENDING, None, "requeued"
        return CellState.INTERRUPTED, job.cause or "PREEMPTED", "interrupted; resumes from its checkpoint"
    if mine and status.get("state") == "RUNNING":
        if _pid_dead_here(status):
            return CellState.INTERRUPTED, "KILLED", "the worker process died mid-cell"
        if job.state == "RUNNING" or (job.state in {"UNKNOWN", "PENDING"} and (run.heartbeat_age() or 0) < STALE_AFTER_S):
            return CellState.RUNNING, None, None
        if job.state == "CANCELLED":
            return CellState.CANCELLED, "CANCELLED", "cancelled while running"
        if job.state in {"INTERRUPTED", "FAILED"}:
            return CellState.INTERRUPTED, job.cause or "KILLED", "the job ended mid-cell"
        return CellState.INTERRUPTED, "KILLED" if job.state == "FINISHED" else "LOST", "no heartbeat from the worker"
    # The job has not started this cell (yet).
    if alive:
        return CellState.PENDING, None, None
    if job.state == "UNKNOWN":
        return attempt_state, None, None
    if job.state == "CANCELLED":
        return CellState.CANCELLED, "CANCELLED", "cancelled before it started"
    if job.state in {"INTERRUPTED", "FAILED"}:
        return CellState.INTERRUPTED, job.cause or "LOST", "the job ended before the cell started"
    return CellState.INTERRUPTED, "LOST", "the job ended without running this cell"


def ingest(store: Store, study: Study) -> list[CellStatus]:
    """Bring the store up to date for the study's cells; return their statuses."""
    workdir = Path(study.workdir).resolve()
    cells = {c.key: c for c in study.cells}
    latest = store.latest_attempts(list(cells))
    active = [a for a in latest.values() if a.state in ACTIVE]
    jobs = _job_states(study, active)
    changes, metric_rows, not_submitted = [], [], []
    for a in active:
        run = RunDir(Path(a.run_dir))
        job_id = a.job_id
        if a.state == CellState.SUBMITTING:
            if launcher_alive(workdir, a.token):
                continue  # still submitting
            job_id = _submitted_job(workdir, a.token, a.cell_key)
            if job_id is None:  # the launch died before the scheduler call returned
                not_submitted.append(a)
                continue
            jobs |= _job_states(study, [_Adopted(a.executor, job_id)])
        job = jobs.get(job_id or "", JobState("UNKNOWN"))
        state, cause, detail = decide(a.state, a.token, run, job)
        status = read_json(run.status) or {}
        change = {"id": a.id, "cell_key": a.cell_key, "state": state, "cause": cause, "detail": detail}
        if job_id != a.job_id:
            change["job_id"] = job_id
        if status.get("token") == a.token:
            change |= {"host": status.get("host")}
            if status.get("started"):
                change["started_at"] = _utc(status["started"])
        if state in {CellState.COMPLETED, CellState.FAILED, CellState.INTERRUPTED, CellState.CANCELLED}:
            change["ended_at"] = _utc(status.get("ended") or time.time())
        if state == CellState.COMPLETED:
            metric_rows.extend(_metric_rows(a.cell_key, run))
        if (state, cause, detail) != (a.state, a.cause, a.detail) or "host" in change or "job_id" in change:
            changes.append(change)
    changes.extend(
        {"id": a.id, "cell_key": a.cell_key, "state": CellState.INTERRUPTED, "cause": "NOT_SUBMITTED",
         "detail": "the launch was killed before submitting; the next `sweeper launch` submits it"}
        for a in not_submitted
    )
    store.update_attempts(changes)
    store.reset_cells([a.cell_key for a in not_submitted])  # never reached the scheduler: new again
    store.add_metric_rows(metric_rows)
    return _statuses(store, study, workdir)


@dataclass(frozen=True)
class _Adopted:
    executor: str
    job_id: str


def _submitted_job(workdir: Path, token: str, key: str) -> str | None:
    """The job id a killed launch got from the scheduler, from its manifest, if it got that far."""
    manifest = read_json(submissions_dir(workdir) / f"{token}.json") or {}
    return manifest.get("jobs", {}).get(key)


def _job_states(study: Study, attempts: list) -> dict[str, JobState]:
    by_kind: dict[str, list[str]] = {}
    for a in attempts:
        if a.job_id:
            by_kind.setdefault(a.executor, []).append(a.job_id)
    out: dict[str, JobState] = {}
    for kind, ids in by_kind.items():
        executor = study.executor if study.executor.kind == kind else _default_executor(kind)
        out.update(backend(executor, Path(study.workdir).resolve() / "submitit").states(sorted(set(ids))))
    return out


def _default_executor(kind: str):
    return SlurmExecutor(kind="slurm") if kind == "slurm" else LocalExecutor(kind="local")


def _metric_rows(key: str, run: RunDir) -> list[dict]:
    result = read_json(run.result) or {}
    rows = [{"cell_key": key, "stage": "final", "name": n, "step": None, "value": float(v)} for n, v in result.items()]
    for line in run.reports():
        step = line.get("step")
        rows.extend(
            {"cell_key": key, "stage": "report", "name": n, "step": step, "value": float(v)}
            for n, v in line.get("metrics", {}).items()
        )
    return rows


def _statuses(store: Store, study: Study, workdir: Path) -> list[CellStatus]:
    latest = store.latest_attempts([c.key for c in study.cells])
    out = []
    for cell in study.cells:
        a = latest.get(cell.key)
        if a is None:
            out.append(CellStatus(cell.key, cell.labels, CellState.PLANNED))
            continue
        state = CellState.PLANNED if a.cause == "NOT_SUBMITTED" else a.state
        row = CellStatus(cell.key, cell.labels, state, a.cause, a.detail, a.number, a.job_id)
        if a.state == CellState.RUNNING:
            run = RunDir.of(workdir, cell.key)
            row.heartbeat_age, row.progress = run.heartbeat_age(), run.last_report()
        out.append(row)
    return out


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(float(ts), UTC)
