"""`decide`: the scheduler's live state wins over a pid check, and a judged attempt is read again.

Real run directories and real (dead) processes; the scheduler's word is the JobState a backend
returns. The SLURM end-to-end counterparts are in test_launch_slurm.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from sweeper.ingest import STALE_AFTER_S, decide, ingest
from sweeper.run.rundir import RunDir, write_json
from sweeper.run.status import Status
from sweeper.scheduler import JobState
from sweeper.store import Cause, CellState, SchedulerState, Store
from tests.sweeper.orchestration import submitted, write


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _run(tmp_path, status: dict | None, *, result: bool = False) -> RunDir:
    run = RunDir(tmp_path / "cell")
    run.path.mkdir()
    if status is not None:
        write_json(run.status, status)
        run.heartbeat.touch()
    if result:
        write_json(run.result, {"acc": 1.0})
    return run


def _worker(pid: int, **extra) -> dict:
    status = {
        "state": "RUNNING",
        "token": "t1",
        "host": socket.gethostname(),
        "pid": pid,
        "started": time.time(),
    }
    return status | extra


I, P, R, C = CellState.INTERRUPTED, CellState.PENDING, CellState.RUNNING, CellState.CANCELLED  # noqa: E741


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        # SLURM holds a requeued job to run it again: its worker is dead, the attempt is not
        (JobState("PENDING"), (P, None, "requeued")),
        # restarted after a requeue, before its new worker rewrote status.json
        (JobState("RUNNING"), (R, None, None)),
        # scancel: SLURM's word, whenever status runs (before or after the worker is killed)
        (JobState("CANCELLED", "CANCELLED"), (C, "CANCELLED", "cancelled while running")),
        (JobState("INTERRUPTED", "TIMEOUT"), (I, "TIMEOUT", "the job ended mid-cell")),
        (JobState("FAILED", "OUT_OF_MEMORY"), (I, "OUT_OF_MEMORY", "the job ended mid-cell")),
        # no word from the scheduler that the job lives: the dead pid decides
        (JobState("FINISHED"), (I, "KILLED", "the worker process died mid-cell")),
        (JobState("UNKNOWN"), (I, "KILLED", "the worker process died mid-cell")),
        # local lanes: RUNNING is that of the other lanes, not of this cell's worker
        (JobState("RUNNING", shared=True), (I, "KILLED", "the worker process died mid-cell")),
    ],
)
def test_the_scheduler_state_wins_over_a_dead_worker_pid(tmp_path, dead_pid, job, expected):
    run = _run(tmp_path, _worker(dead_pid))
    assert decide(R, "t1", run, Status.read(run.status), job) == expected


def test_a_live_worker_is_running_and_a_result_completes_whatever_was_judged(tmp_path, dead_pid):
    run = _run(tmp_path, _worker(os.getpid()))
    assert decide(R, "t1", run, Status.of(_worker(os.getpid())), JobState("RUNNING", shared=True))[0] == R
    write_json(run.result, {"acc": 1.0})
    assert decide(I, "t1", run, Status.of(_worker(dead_pid)), JobState("FINISHED"))[0] == CellState.COMPLETED


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (JobState("PENDING"), (P, None, "requeued")),  # checkpointed, and submitit requeued it
        (JobState("FAILED", "KILLED"), (I, "KILLED", "interrupted; resumes from its checkpoint")),
    ],
)
def test_a_checkpointed_worker_is_pending_while_its_job_is_requeued(tmp_path, dead_pid, job, expected):
    status = _worker(dead_pid, state="INTERRUPTED", cause="REQUEUED", checkpointed=True)
    assert decide(R, "t1", _run(tmp_path, status), Status.of(status), job) == expected


def test_submitits_give_up_after_too_many_timeouts_is_a_timeout(tmp_path, dead_pid):
    detail = "reached the time limit (timeout_min) too many times: submitit stopped requeueing it"
    status = _worker(dead_pid, state="INTERRUPTED", cause="TIMEOUT", checkpointed=True, detail=detail)
    job = JobState("FAILED", "KILLED")  # submitit ends the job with an error
    assert decide(R, "t1", _run(tmp_path, status), Status.of(status), job) == (I, "TIMEOUT", detail)


def test_an_attempt_judged_killed_is_read_again_and_completes_with_its_result(env, dead_pid):
    """An attempt judged dead whose job still ran to its end: the result is not left outside the store."""
    study = write(env / "late.yaml", "echo", {"x": 1}, "+variant: [a]")
    (cell,) = study.cells
    run = RunDir.of(study.workdir, cell.key)
    with Store() as store:
        store.plan(study)
        submitted(
            store, cell, run, I, str(dead_pid), cause="KILLED", detail="the worker process died mid-cell"
        )
        write_json(run.status, _worker(dead_pid))
        (s,) = ingest(store, study)
        assert (s.state, s.cause) == (I, "KILLED")
        write_json(run.result, {"score": 3.0})  # the job it belonged to wrote its result after all
        (s,) = ingest(store, study)
        assert s.state == CellState.COMPLETED and s.cause is None
        assert store.metrics(cell.key)["score"] == 3.0


def test_a_pending_debug_attempt_of_a_study_switched_to_local_is_read_by_the_debug_backend(env):
    """Each attempt's job id goes to the backend that made it: `debug-12345` is no local pid."""
    study = write(env / "switch.yaml", "echo", {"x": 1}, "+variant: [a]", executor="{kind: debug}")
    (cell,) = study.cells
    run = RunDir.of(study.workdir, cell.key)
    with Store() as store:
        store.plan(study)
        store.add_attempt(
            cell.key,
            executor="debug",
            state=CellState.PENDING,
            token="t1",
            run_dir=str(run.path),
            job_id="debug-12345",
        )
        study = write(env / "switch.yaml", "echo", {"x": 1}, "+variant: [a]")  # now local
        (s,) = ingest(store, study)
    # A debug job lives only as long as the launch that ran it: ended, it never started the cell.
    assert (s.state, s.cause) == (I, "LOST")


# Every (scheduler state, worker status, heartbeat age) and what `decide` makes of it: the scheduler's
# states as the backends report them, the worker's status.json as a worker writes it for attempt t1.
JOBS = {
    "pending": JobState(SchedulerState.PENDING),
    "running": JobState(SchedulerState.RUNNING),
    "lanes running": JobState(SchedulerState.RUNNING, shared=True),
    "finished": JobState(SchedulerState.FINISHED),
    "failed": JobState(SchedulerState.FAILED, Cause.KILLED),
    "cancelled": JobState(SchedulerState.CANCELLED, Cause.CANCELLED),
    "preempted": JobState(SchedulerState.INTERRUPTED, Cause.PREEMPTED),
    "unknown": JobState(SchedulerState.UNKNOWN),
}
F, D = CellState.FAILED, CellState.COMPLETED
PR = CellState.PRUNED
# worker status -> (state, cause) per job, in JOBS' order; the attempt was RUNNING when judged.
DECIDED = {
    "none": [
        (P, None),
        (P, None),
        (P, None),
        (I, "LOST"),
        (I, "KILLED"),
        (C, "CANCELLED"),
        (I, "PREEMPTED"),
        (R, None),
    ],
    "running here": [
        (P, None),
        (R, None),
        (R, None),
        (I, "KILLED"),
        (I, "KILLED"),
        (C, "CANCELLED"),
        (I, "PREEMPTED"),
        (R, None),
    ],
    "dead here": [
        (P, None),
        (R, None),
        (I, "KILLED"),
        (I, "KILLED"),
        (I, "KILLED"),
        (C, "CANCELLED"),
        (I, "PREEMPTED"),
        (I, "KILLED"),
    ],
    "running elsewhere": [
        (P, None),
        (R, None),
        (R, None),
        (I, "KILLED"),
        (I, "KILLED"),
        (C, "CANCELLED"),
        (I, "PREEMPTED"),
        (R, None),
    ],
    "requeued": [
        (P, None),
        (P, None),
        (P, None),
        (I, "PREEMPTED"),
        (I, "KILLED"),
        (I, "CANCELLED"),
        (I, "PREEMPTED"),
        (I, "PREEMPTED"),
    ],
    "timed out": [(I, "TIMEOUT")] * 8,
    "failed": [(F, "EXCEPTION")] * 8,
    "prune asked": [(P, None), (R, None), (R, None)] + [(PR, "PRUNED")] * 5,
    "pruned": [(PR, "PRUNED")] * 8,
    "result": [(D, None)] * 8,
}
# A stale heartbeat changes one thing: a worker the scheduler says nothing of, on another host, is lost.
STALE = {("running here", "unknown"): (I, "LOST"), ("running elsewhere", "unknown"): (I, "LOST")}


def _status(kind: str, dead: int) -> dict | None:
    here, elsewhere = _worker(os.getpid()), _worker(12345, host="another-node")
    return {
        "none": None,
        "running here": here,
        "dead here": _worker(dead),
        "running elsewhere": elsewhere,
        "requeued": _worker(dead, state="INTERRUPTED", cause="REQUEUED", checkpointed=True),
        "timed out": _worker(dead, state="INTERRUPTED", cause="TIMEOUT", checkpointed=True),
        "failed": _worker(dead, state="FAILED", cause="EXCEPTION", error="ValueError: x"),
        "prune asked": elsewhere,
        "pruned": _worker(dead, state="PRUNED"),
        "result": _worker(dead),
    }[kind]


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale"])
@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("kind", list(DECIDED))
def test_decide_over_every_scheduler_state_worker_status_and_heartbeat_age(
    tmp_path, dead_pid, kind, job, stale
):
    status = _status(kind, dead_pid)
    run = _run(tmp_path, status, result=kind == "result")
    if kind in ("prune asked", "pruned"):
        run.prune.write_text("pruned by the median pruner at step 3\n")
    if stale and status is not None:
        old = time.time() - STALE_AFTER_S - 60
        os.utime(run.heartbeat, (old, old))
    expected = DECIDED[kind][list(JOBS).index(job)]
    if stale:
        expected = STALE.get((kind, job), expected)
    state, cause, _ = decide(R, "t1", run, Status.read(run.status), JOBS[job])
    assert (state, cause) == expected
