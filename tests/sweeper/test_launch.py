"""Launch, status, resume and cancel with real submitit jobs on the local executor (and debug)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sweeper.errors import UserError
from sweeper.ingest import ingest
from sweeper.launch import cancel, launch, resume
from sweeper.run.rundir import RunDir, read_json
from sweeper.store import CellState, Store
from sweeper.study import load_study
from tests.sweeper.orchestration import runs_per_cell, wait_done, wait_for, write


def test_a_12_cell_study_completes_and_every_result_is_in_the_store(env):
    study = write(
        env / "twelve.yaml", "echo", {"x": 1, "log": str(env / "runs.log")}, "x: [1, 2, 3, 4, 5, 6]", seeds=2
    )
    with Store() as store:
        submission, _ = launch(store, study)
        assert len(submission.keys) == 12 and submission.jobs == 2  # two lanes
        statuses = wait_done(store, study)
        assert {s.state for s in statuses} == {CellState.COMPLETED}
        for cell in study.cells:
            assert store.metrics(cell.key) == {"score": cell.config["x"] * 2 + cell.seed, "seed": cell.seed}
        assert set(runs_per_cell(env / "runs.log").values()) == {1}
        # A relaunch after everything completed submits nothing.
        again, _ = launch(store, study)
        assert again.keys == []


def test_a_failing_cell_is_failed_with_its_traceback_and_others_are_unaffected(env, capsys):
    study = write(env / "mixed.yaml", "echo", {"x": 1}, "x: [1, 2]")
    boom = write(env / "boom.yaml", "boom", {"x": 7}, "x: [7]")
    with Store() as store:
        launch(store, study)
        launch(store, boom)
        assert {s.state for s in wait_done(store, study)} == {CellState.COMPLETED}
        (failed,) = wait_done(store, boom)
        assert (failed.state, failed.cause) == (CellState.FAILED, "EXCEPTION")
        assert failed.detail == "ValueError: bad value x=7"
        err = (RunDir.of("runs", failed.key).logs / "attempt-1.err").read_text()
        assert "Traceback" in err and "raise ValueError" in err
        # A fault of the task is not retried unless asked.
        assert resume(store, boom).keys == []
        assert resume(store, boom, retry_failed=True).keys == [failed.key]
        (again,) = wait_done(store, boom)
        assert (again.state, again.attempt) == (CellState.FAILED, 2)


def test_nan_is_its_own_cause(env):
    study = write(env / "nan.yaml", "nan", {"x": 1}, "x: [1]", executor="{kind: debug}")
    with Store() as store:
        launch(store, study)  # debug: runs in this process
        (s,) = ingest(store, study)
    assert (s.state, s.cause) == (CellState.FAILED, "NAN")


@pytest.mark.parametrize("executor", ["{kind: debug}", "{kind: local, parallelism: 2}"])
def test_the_tasks_cwd_is_its_run_directory(env, executor):
    """A relative path (torch.save(state, "ckpt")) lands in the cell's run directory, not where the
    launch ran, so cells do not overwrite each other; the debug executor gives the cwd back."""
    study = write(env / "cwd.yaml", "relative", {"x": 1}, "x: [1, 2]", executor=executor)
    with Store() as store:
        launch(store, study)
        assert os.getcwd() == str(env)
        assert {s.state for s in wait_done(store, study)} == {CellState.COMPLETED}
        for cell in study.cells:
            assert store.metrics(cell.key) == {"cwd_is_run_dir": 1.0}
            assert (RunDir.of("runs", cell.key).path / "ckpt").read_text() == cell.key
    assert not (env / "ckpt").exists()


def test_a_killed_worker_is_detected_and_resumed_from_its_checkpoint(env):
    study = write(
        env / "kill.yaml",
        "steps",
        {"steps": 60, "dt": 0.05, "every": 10},
        "+variant: [a]",
        executor="{kind: local, parallelism: 1}",
    )
    key = study.cells[0].key
    run = RunDir.of("runs", key)
    with Store() as store:
        launch(store, study)
        wait_for(
            lambda: (read_json(run.path / "ckpt.json") or {}).get("step", 0) >= 20, what="two checkpoints"
        )
        os.kill(read_json(run.status)["pid"], signal.SIGKILL)
        (s,) = wait_done(store, study)
        assert (s.state, s.cause) == (CellState.INTERRUPTED, "KILLED")
        assert resume(store, study).keys == [key]
        (s,) = wait_done(store, study)
        assert s.state == CellState.COMPLETED
        result = store.metrics(key)
        assert result["steps"] == 60 and result["resumed_from"] >= 20  # continued, not restarted


def test_a_preempted_cell_checkpoints_on_the_signal_and_resumes_by_itself(env):
    study = write(
        env / "preempt.yaml",
        "steps",
        {"steps": 80, "dt": 0.05, "every": 1000},
        "+variant: [a]",
        executor="{kind: local, parallelism: 1}",
    )
    key = study.cells[0].key
    run = RunDir.of("runs", key)
    with Store() as store:
        launch(store, study)
        wait_for(lambda: (run.last_report() or {}).get("step", 0) >= 15, what="15 steps")
        pid = read_json(run.status)["pid"]
        os.kill(pid, signal.SIGUSR2)  # what SLURM sends before preemption or the time limit
        wait_for(
            lambda: (read_json(run.status) or {}).get("pid") not in (None, pid), what="the requeued worker"
        )
        (s,) = wait_done(store, study)
        assert s.state == CellState.COMPLETED
        result = store.metrics(key)
        # No periodic checkpoint was due: the step counter continues only thanks to the signal.
        assert result["steps"] == 80 and result["resumed_from"] >= 15
        assert read_json(run.status)["restarts"] == 1


LIMIT = "resources: {default: {timeout_min: 0.02}}"  # 1.2 s on a local lane


def test_past_its_timeout_a_local_cell_saves_the_lane_goes_on_and_resume_continues_it(env):
    """A local lane keeps each cell's timeout_min: past it the task saves (no periodic checkpoint is
    due), the cell ends INTERRUPTED with cause TIMEOUT and the lane runs the next cell; each resume
    continues from the last save, so no step runs twice."""
    log = env / "runs.log"
    study = write(
        env / "limit.yaml",
        "steps",
        {"steps": 40, "dt": 0.05, "every": 1000, "log": str(log)},
        "+variant: [a, b]",
        executor="{kind: local, parallelism: 1}",
        extra=LIMIT + "\nretry: {max_attempts: 10}",
    )  # 2 s of steps: a resume or two each
    with Store() as store:
        launch(store, study)
        statuses = wait_done(store, study)
        assert {(s.state, s.cause) for s in statuses} == {
            (CellState.INTERRUPTED, "TIMEOUT")
        }  # both, on one lane
        for _ in range(10):
            if all(s.state == CellState.COMPLETED for s in statuses):
                break
            resume(store, study)
            statuses = wait_done(store, study)
        for cell in study.cells:
            starts = [
                int(line.split("from=")[1])
                for line in log.read_text().splitlines()
                if line.startswith(cell.key)
            ]
            assert len(starts) >= 2 and starts[0] == 0 and starts == sorted(set(starts))
            assert store.metrics(cell.key) == {"steps": 40, "resumed_from": starts[-1]}


def test_a_local_task_that_ignores_its_timeout_is_stopped_with_its_lane(env, monkeypatch):
    monkeypatch.setenv("SWEEPER_CHECKPOINT_GRACE_S", "1")
    study = write(
        env / "stuck.yaml",
        "echo",
        {"x": 1, "sleep": 60},
        "+variant: [a]",
        executor="{kind: local, parallelism: 1}",
        extra=LIMIT,
    )
    run = RunDir.of("runs", study.cells[0].key)
    with Store() as store:
        launch(store, study)
        (s,) = wait_done(store, study, timeout=30)
    assert (s.state, s.cause, s.detail) == (
        CellState.INTERRUPTED,
        "TIMEOUT",
        "ran past its timeout_min and did not save in time",
    )
    assert (
        "did not save within 1 s of the request; ending this lane" in (run.logs / "attempt-1.err").read_text()
    )


def test_two_concurrent_launches_submit_each_cell_once(env):
    write(env / "race.yaml", "echo", {"x": 1, "log": str(env / "runs.log")}, "x: [1, 2, 3, 4]", seeds=2)
    cmd = [str(Path(sys.executable).parent / "sweeper"), "launch", "race.yaml", "--json"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stdout + stderr
        outs.append(json.loads(stdout))
    assert sorted(len(o["submitted"]) for o in outs) in ([0, 8], [1, 7], [2, 6], [3, 5], [4, 4])
    assert not set(outs[0]["submitted"]) & set(outs[1]["submitted"])
    study = load_study("race.yaml")
    with Store() as store:
        assert {s.state for s in wait_done(store, study)} == {CellState.COMPLETED}
    assert runs_per_cell(env / "runs.log") == Counter({c.key: 1 for c in study.cells})


@pytest.mark.parametrize("fault", ["after-claim", "before-submit", "before-manifest", "after-submit"])
def test_a_controller_killed_mid_submission_loses_and_duplicates_nothing(env, fault):
    sleep = 1.0  # long enough that the lanes of the killed launch are mid-cell when the relaunch comes
    study = write(
        env / "crash.yaml",
        "echo",
        {"x": 1, "sleep": sleep, "log": str(env / "runs.log")},
        "x: [1, 2, 3]",
        seeds=2,
    )
    cmd = [str(Path(sys.executable).parent / "sweeper"), "launch", "crash.yaml"]
    # Not captured: the lanes inherit the pipes, and reading them to the end would wait for the lanes.
    killed = subprocess.run(
        cmd,
        env=os.environ | {"SWEEPER_FAULT": fault},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    relaunch = subprocess.run(cmd + ["--wait"], capture_output=True, text=True, timeout=180)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    with Store() as store:
        assert {s.state for s in wait_done(store, study)} == {CellState.COMPLETED}
    assert runs_per_cell(env / "runs.log") == Counter({c.key: 1 for c in study.cells})


def test_cancel_then_resume(env):
    study = write(
        env / "cancel.yaml",
        "steps",
        {"steps": 400, "dt": 0.05, "every": 5},
        "+variant: [a, b, c]",
        executor="{kind: local, parallelism: 1}",
    )
    with Store() as store:
        launch(store, study)
        wait_for(
            lambda: any(s.state == CellState.RUNNING for s in ingest(store, study)), what="a running cell"
        )
        assert len(cancel(store, study)) == 3
        statuses = wait_done(store, study)
        assert {(s.state, s.cause) for s in statuses} == {(CellState.CANCELLED, "CANCELLED")}
        assert len(resume(store, study, only=["variant=a"]).keys) == 1


@pytest.mark.parametrize(("task", "axis"), [("steps", "dt"), ("echo", "sleep")])
def test_cancel_only_stops_exactly_the_selected_cells_and_the_lanes_run_the_others(
    env, monkeypatch, task, axis
):
    """Both lanes run a (long) selected cell when the cancel comes. `steps` saves and stops at the
    request and its lane goes on; `echo` ignores it, so past the grace its lane restarts (submitit's
    requeue code) and runs the lane's other cells. No other cell is lost, and none runs twice."""
    monkeypatch.setenv("SWEEPER_CHECKPOINT_GRACE_S", "1")
    log = env / "runs.log"
    values = {
        "dt": "{baseline: 0.2, other: 0.01, third: 0.02}",
        "sleep": "{baseline: 8, other: 0.2, third: 0.3}",
    }
    study = write(
        env / "only.yaml",
        task,
        {"x": 1, "steps": 40, "dt": 0.05, "sleep": 2, "log": str(log)},
        f"{axis}: {values[axis]}",
        seeds=2,
    )
    chosen = {c.key for c in study.cells if c.labels[axis] == "baseline"}
    with Store() as store:
        launch(store, study)
        wait_for(
            lambda: {s.key for s in ingest(store, study) if s.state == CellState.RUNNING} == chosen,
            what="both lanes running a baseline cell",
        )
        assert set(cancel(store, study, only=[f"{axis}=baseline"])) == chosen
        statuses = wait_done(store, study)
        assert {s.key: s.state for s in statuses} == {
            c.key: CellState.CANCELLED if c.key in chosen else CellState.COMPLETED for c in study.cells
        }
    assert runs_per_cell(log) == Counter({c.key: 1 for c in study.cells})
    for key in chosen:
        status = read_json(RunDir.of("runs", key).status)
        assert (status["state"], status["checkpointed"]) == ("CANCELLED", task == "steps")


def test_only_max_cells_and_dry_run(env):
    study = write(env / "sel.yaml", "echo", {"x": 1}, "x: [1, 2, 3]", seeds=2, executor="{kind: debug}")
    with Store() as store:
        _, chosen = launch(store, study, dry_run=True)
        assert len(chosen) == 6 and store.studies() == []  # a dry run records nothing
        submission, _ = launch(store, study, only=["x=2"])
        assert len(submission.keys) == 2
        submission, _ = launch(store, study, max_cells=3)
        assert len(submission.keys) == 3
        assert Counter(s.state for s in ingest(store, study)) == {
            CellState.COMPLETED: 5,
            CellState.PLANNED: 1,
        }


def test_the_cli_follows_a_launch_and_shows_logs(env):
    write(env / "cli.yaml", "echo", {"x": 1}, "x: [1, 2]", executor="{kind: local, parallelism: 2}")
    sweeper = str(Path(sys.executable).parent / "sweeper")
    done = subprocess.run(
        [sweeper, "launch", "cli.yaml", "--wait"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "2 completed" in done.stdout
    status = subprocess.run([sweeper, "status", "cli", "--json"], capture_output=True, text=True, timeout=60)
    rows = json.loads(status.stdout)
    assert [r["state"] for r in rows] == ["COMPLETED", "COMPLETED"]
    bad = subprocess.run(
        [sweeper, "launch", "cli.yaml", "--only", "x=9"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "'9' is not a value of x" in bad.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_or_a_closed_terminal_stops_the_watch_not_the_lanes(env, sig):
    """A terminal sends SIGINT (Ctrl-C) or SIGHUP (closed) to its foreground process group: the
    `launch --wait` stops, the local lanes finish every cell, and no traceback is printed."""
    log = env / "runs.log"
    study = write(env / "watch.yaml", "echo", {"x": 1, "sleep": 1.5, "log": str(log)}, "x: [1, 2, 3, 4]")
    sweeper = str(Path(sys.executable).parent / "sweeper")
    with open(env / "out.txt", "w") as out:  # a file, not a pipe that lanes could hold open
        # Its own process group, as a shell's foreground job, with the signals' default actions (a
        # test run started in the background, or under nohup, would have them ignored).
        watch = subprocess.Popen(
            [sweeper, "launch", "watch.yaml", "--wait"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)],
        )
        runs = [RunDir.of("runs", c.key) for c in study.cells]
        wait_for(
            lambda: [(read_json(r.status) or {}).get("state") for r in runs].count("RUNNING") == 2,
            what="both lanes running a cell",
        )
        os.killpg(watch.pid, sig)
        assert watch.wait(timeout=30) == (130 if sig == signal.SIGINT else -sig)
    with Store() as store:
        assert {s.state for s in wait_done(store, study)} == {CellState.COMPLETED}
    assert runs_per_cell(log) == Counter({c.key: 1 for c in study.cells})
    shown = (env / "out.txt").read_text()
    assert "Traceback" not in shown and "KeyboardInterrupt" not in shown
    if sig == signal.SIGINT:
        assert "stopped following watch; its cells go on running" in shown
        assert "`sweeper launch watch.yaml --wait` follows them again" in shown


def test_out_of_memory_is_retried_only_with_more_memory_configured(env):
    plain = write(
        env / "oom.yaml",
        "oom",
        {"x": 1},
        "x: [1]",
        executor="{kind: debug}",
        extra="resources: {default: {mem_gb: 8}}",
    )
    with Store() as store:
        launch(store, plain)
        (s,) = ingest(store, plain)
        assert (s.state, s.cause) == (CellState.FAILED, "OUT_OF_MEMORY")
        skipped = resume(store, plain)
        assert skipped.keys == [] and "retry.oom_memory_factor" in skipped.skipped[s.key]
        grow = write(
            env / "oom.yaml",
            "oom",
            {"x": 1},
            "x: [1]",
            executor="{kind: debug}",
            extra="resources: {default: {mem_gb: 8}}\nretry: {max_attempts: 2, oom_memory_factor: 2}",
        )
        assert resume(store, grow).keys == [s.key]
        (s,) = ingest(store, grow)
        assert (s.state, s.attempt) == (CellState.FAILED, 2)
        gave_up = resume(store, grow)  # bounded: two attempts were allowed
        assert gave_up.keys == [] and "gave up after 2 attempts" in gave_up.skipped[s.key]


def test_the_studys_check_runs_before_anything_is_submitted(env):
    (env / "data").mkdir()
    study = write(
        env / "checked.yaml",
        "echo",
        {"x": 1, "root": str(env / "data")},
        "root: [data, /no/such/dir]",
        executor="{kind: debug}",
        extra="check: tests.sweeper.tasks:check",
    )
    with Store() as store, pytest.raises(UserError) as e:
        launch(store, study)
    assert "checked.yaml: cell {root=/no/such/dir}: root: /no/such/dir does not exist" in str(e.value)
    assert "root=data}" not in str(e.value)
    with Store() as store:
        assert [s.state for s in ingest(store, study)] == [CellState.PLANNED] * 2  # nothing submitted
        broken = write(
            env / "checked.yaml",
            "echo",
            {"x": 1},
            "x: [1]",
            executor="{kind: debug}",
            extra="check: tests.sweeper.no_such_module:check",
        )
        with pytest.raises(
            UserError,
            match=r"checked.yaml: check: cannot import "
            r"'tests.sweeper.no_such_module:check'",
        ):
            launch(store, broken)


def test_local_lanes_share_the_cores_instead_of_oversubscribing(env, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    shared = write(
        env / "share.yaml", "threads", {"x": 1}, "x: [1, 2]", executor="{kind: local, parallelism: 2}"
    )
    pinned = write(
        env / "pin.yaml",
        "threads",
        {"x": 1},
        "x: [3]",
        executor="{kind: local, parallelism: 2}",
        extra="resources: {default: {cpus_per_task: 3}}",
    )
    with Store() as store:
        for study in (shared, pinned):
            launch(store, study)
            wait_done(store, study)
        assert {store.metrics(c.key)["omp_threads"] for c in shared.cells} == {
            max(1, (os.cpu_count() or 1) // 2)
        }
        assert store.metrics(pinned.cells[0].key)["omp_threads"] == 3


def test_a_task_that_cannot_be_imported_is_refused_before_anything_is_recorded(env):
    study = write(env / "noimport.yaml", "echo", {"x": 1}, "x: [1]", executor="{kind: local, parallelism: 1}")
    study.task = "tests.sweeper.no_such_module:run"
    with Store() as store:
        with pytest.raises(
            UserError,
            match=r"noimport.yaml: task: cannot import "
            r"'tests.sweeper.no_such_module:run': ModuleNotFoundError",
        ):
            launch(store, study)
        assert store.plan(study, record=False).added == [study.cells[0].key]  # not recorded
