"""The orchestrator on a real SLURM (scripts/slurm-sandbox.sh): arrays, scancel, requeue, kill -9.

Skipped without SLURM_CONF, except under CI=true, where it fails: CI brings the sandbox up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap

import pytest

from sweeper.ingest import ingest
from sweeper.launch import launch, resume
from sweeper.run.rundir import RunDir, pid_alive, read_json
from sweeper.store import CellState, Store
from tests.sweeper.orchestration import (
    PRUNING_SEARCH,
    run_search,
    runs_per_cell,
    wait_done,
    wait_for,
    write,
)

if not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")):
    if os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but SLURM is unavailable (scripts/slurm-sandbox.sh up; eval its env)", pytrace=False
        )
    pytest.skip(
        'no SLURM (bash scripts/slurm-sandbox.sh up && eval "$(bash scripts/slurm-sandbox.sh env)")',
        allow_module_level=True,
    )

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]
SLURM = "{kind: slurm, array_parallelism: 4, signal_delay_s: 30}"


def test_a_12_cell_study_runs_as_one_array_and_lands_in_the_store(env):
    study = write(
        env / "arr.yaml",
        "echo",
        {"x": 1, "log": str(env / "runs.log")},
        "x: [1, 2, 3, 4, 5, 6]",
        seeds=2,
        executor=SLURM,
        extra="resources: {default: {timeout_min: 4.5, cpus_per_task: 1}}",
    )
    with Store() as store:
        submission, _ = launch(store, study)
        assert len(submission.keys) == 12 and submission.jobs == 12
        arrays = {a.job_id.split("_")[0] for a in store.attempts_of(submission.token)}
        assert len(arrays) == 1  # one sbatch
        assert {s.state for s in wait_done(store, study, timeout=240)} == {CellState.COMPLETED}
        for cell in study.cells:
            assert store.metrics(cell.key)["score"] == cell.config["x"] * 2 + cell.seed
        assert launch(store, study)[0].keys == []
    assert set(runs_per_cell(env / "runs.log").values()) == {1}


def _running(store, study, run: RunDir, min_step: int) -> dict:
    wait_for(
        lambda: (read_json(run.path / "ckpt.json") or {}).get("step", 0) >= min_step,
        timeout=120,
        what="checkpoints",
    )
    return read_json(run.status)


def test_scancel_is_cancelled_and_resume_continues_from_the_checkpoint(env):
    study = write(
        env / "scancel.yaml",
        "steps",
        {"steps": 200, "dt": 0.05, "every": 10},
        "+variant: [a]",
        executor=SLURM,
    )
    run = RunDir.of("runs", study.cells[0].key)
    with Store() as store:
        launch(store, study)
        status = _running(store, study, run, 20)
        subprocess.run(["scancel", status["job_id"]], check=True, timeout=30)
        # read after SLURM has killed the worker (KillWait), not in the seconds before: still sacct's word
        wait_for(lambda: not pid_alive(status["pid"]), timeout=60, what="the worker to be killed")
        (s,) = wait_done(store, study, timeout=120)
        assert (s.state, s.cause) == (CellState.CANCELLED, "CANCELLED")
        assert resume(store, study).keys == [s.key]
        (s,) = wait_done(store, study, timeout=240)
        assert s.state == CellState.COMPLETED and store.metrics(s.key)["resumed_from"] >= 20


def test_a_killed_worker_is_detected_and_resumed(env):
    study = write(
        env / "kill.yaml", "steps", {"steps": 200, "dt": 0.05, "every": 10}, "+variant: [a]", executor=SLURM
    )
    run = RunDir.of("runs", study.cells[0].key)
    with Store() as store:
        launch(store, study)
        status = _running(store, study, run, 20)
        os.kill(status["pid"], signal.SIGKILL)
        (s,) = wait_done(store, study, timeout=120)
        assert s.state == CellState.INTERRUPTED and s.cause in {"KILLED"}
        resume(store, study)
        (s,) = wait_done(store, study, timeout=240)
        assert s.state == CellState.COMPLETED and store.metrics(s.key)["resumed_from"] >= 20


def test_a_requeued_job_is_pending_until_it_runs_again_and_resume_leaves_it_to_slurm(env):
    """Between a requeue and the restart (~10-15 s) the worker is dead and SLURM holds the job PENDING:
    the same attempt, not a dead worker, and nothing for `resume` to submit (no second copy)."""
    base = {"steps": 300, "dt": 0.05, "every": 10, "log": str(env / "runs.log")}
    study = write(env / "requeue.yaml", "steps", base, "+variant: [a]", executor=SLURM)
    run = RunDir.of("runs", study.cells[0].key)
    with Store() as store:
        launch(store, study)
        status = _running(store, study, run, 20)
        subprocess.run(["scontrol", "requeue", status["job_id"]], check=True, timeout=30)
        wait_for(
            lambda: not pid_alive(status["pid"]) and _squeue(status["job_id"]) == "PENDING",
            timeout=60,
            what="the worker killed and the job pending",
        )
        (s,) = ingest(store, study)
        assert (s.state, s.cause) == (CellState.PENDING, None), s
        assert resume(store, study).keys == []
        (s,) = wait_done(store, study, timeout=240)
        assert s.state == CellState.COMPLETED and store.metrics(s.key)["resumed_from"] >= 20
        assert read_json(run.status)["restarts"] == 1 and len(store.attempts(s.key)) == 1
    assert runs_per_cell(env / "runs.log") == {s.key: 2}  # the first run and its restart, one job


def _squeue(job_id: str) -> str:
    squeue = ["squeue", "-h", "-j", job_id, "-o", "%T"]
    return subprocess.run(squeue, capture_output=True, text=True, timeout=30).stdout.strip()


def test_submitit_giving_up_after_too_many_time_limits_is_a_timeout(env):
    """SLURM warns a job signal_delay_s before its limit; submitit requeues it 3 times, then gives up."""
    study = write(
        env / "limit.yaml",
        "steps",
        {"steps": 100000, "dt": 0.05, "every": 10},
        "+variant: [a]",
        executor="{kind: slurm, signal_delay_s: 30}",
        extra="resources: {default: {timeout_min: 1}}",
    )
    run = RunDir.of("runs", study.cells[0].key)
    with Store() as store:
        launch(store, study)
        for restart in range(4):  # the warning SLURM sends, sent now rather than 30 s into each run
            status = wait_for(
                lambda r=restart: (
                    (st := read_json(run.status) or {}).get("state") == "RUNNING"
                    and st.get("restarts") == r
                    and st
                ),
                timeout=120,
                what=f"run {restart}",
            )
            subprocess.run(["scancel", "--signal=USR2", status["job_id"]], check=True, timeout=30)
        (s,) = wait_done(store, study, timeout=120)
        assert (s.state, s.cause) == (CellState.INTERRUPTED, "TIMEOUT"), s
        assert "too many times" in s.detail


def test_out_of_memory_is_its_cause_and_resume_retries_with_more_memory(env):
    """The sandbox kills a step past its --mem (OverMemoryKill); oom_memory_factor 4: 0.5 GB, then 2 GB."""
    base = {"mb": 1024, "hold_s": 4, "log": str(env / "runs.log")}
    study = write(
        env / "oom.yaml",
        "hog",
        base,
        "+variant: [a]",
        executor=SLURM,
        extra="resources: {default: {mem_gb: 0.5}}\nretry: {oom_memory_factor: 4}",
    )
    with Store() as store:
        launch(store, study)
        (s,) = wait_done(store, study, timeout=120)
        assert (s.state, s.cause) == (CellState.INTERRUPTED, "OUT_OF_MEMORY"), s
        assert resume(store, study).keys == [s.key]
        job = store.attempts(s.key)[-1].job_id
        shown = subprocess.run(
            ["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30
        ).stdout
        assert "mem=2G" in shown, shown
        (s,) = wait_done(store, study, timeout=120)
        assert s.state == CellState.COMPLETED and store.metrics(s.key)["held_mb"] == 1024


def test_short_cells_are_packed_several_per_array_task(env):
    packed = SLURM.replace("}", ", cells_per_job: 3}")
    study = write(
        env / "pack.yaml",
        "echo",
        {"x": 1, "log": str(env / "runs.log")},
        "x: [1, 2, 3, 4, 5, 6, 7]",
        executor=packed,
    )
    with Store() as store:
        submission, _ = launch(store, study)
        assert submission.jobs == 3  # 7 cells in packs of 3
        assert {s.state for s in wait_done(store, study, timeout=240)} == {CellState.COMPLETED}
    assert set(runs_per_cell(env / "runs.log").values()) == {1}


def test_a_search_prunes_and_records_its_trials_on_slurm(env):
    """Ask/tell between sacct polls; the prune request reaches the job through the shared run directory."""
    search = (
        "search:\n"
        + textwrap.indent(PRUNING_SEARCH, "  ")
        + "resources: {default: {timeout_min: 5, cpus_per_task: 1}}"
    )
    study = write(
        env / "search.yaml",
        "curve",
        {"x": 0.5, "steps": 12, "dt": 0.2, "log": str(env / "runs.log")},
        "+variant: [a]",
        executor=SLURM,
        extra=search,
    )
    with Store() as store:
        statuses = run_search(store, study, timeout=240)
        assert len(statuses) == 6
        pruned = [s for s in statuses if s.state == CellState.PRUNED]
        assert pruned and {s.state for s in statuses} == {CellState.COMPLETED, CellState.PRUNED}
        for s in pruned:
            assert len(RunDir.of("runs", s.key).reports()) < 12
            assert store.attempts(s.key)[-1].job_id  # a SLURM job, stopped by the pruner, not scancel
    assert set(runs_per_cell(env / "runs.log").values()) == {1}
