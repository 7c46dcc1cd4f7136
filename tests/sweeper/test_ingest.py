"""Ingestion: non-finite and malformed values, bad run directories, resumed steps, racing controllers."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text

from sweeper.ingest import ingest
from sweeper.launch import launch, resume
from sweeper.run.rundir import RunDir, Values, read_json
from sweeper.run.worker import WorkerContext
from sweeper.store import CellState, Store
from tests.sweeper.orchestration import wait_done, wait_for, write

SWEEPER = str(Path(sys.executable).parent / "sweeper")


def _by_bad(study, statuses):
    return {study_cell.config["bad"]: s for study_cell, s in zip(study.cells, statuses, strict=True)}


def test_a_nan_or_inf_result_fails_its_cell_with_NAN_and_every_other_result_is_stored(env):
    write(env / "nan.yaml", "values", {"bad": "0.25"}, 'bad: ["0.25", "nan", "inf"]')
    done = subprocess.run(
        [SWEEPER, "launch", "nan.yaml", "--wait"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stdout + done.stderr  # a cell failed: no traceback
    assert "Traceback" not in done.stdout + done.stderr
    assert "NAN" in done.stdout and "acc=nan" in done.stdout and "acc=inf" in done.stdout
    study = write(env / "nan.yaml", "values", {"bad": "0.25"}, 'bad: ["0.25", "nan", "inf"]')
    with Store() as store:
        cells = _by_bad(study, ingest(store, study))
        assert cells["0.25"].state == CellState.COMPLETED
        assert store.metrics(cells["0.25"].key) == {"acc": 0.25, "params.M": 5.0}
        for bad in ("nan", "inf"):
            s = cells[bad]
            assert (s.state, s.cause) == (CellState.FAILED, "NAN")
            assert s.detail == f"NonFiniteMetric: the task returned acc={bad}"
            assert store.metrics(s.key) == {"params.M": 5.0}  # the finite values are kept
            assert store.metrics(s.key, final_only=False)["loss"] == 1 / 3
        # A NaN is a fault of the task: resumed only when asked, as the fault table says.
        assert resume(store, study).keys == []
    # The report counts finished cells only: the failed cells' kept values are not in its means.
    report = subprocess.run(
        [SWEEPER, "report", "nan", "--format", "csv"], capture_output=True, text=True, timeout=60
    )
    assert report.returncode == 0, report.stderr
    rows = csv.DictReader(io.StringIO(report.stdout))
    means = {r["bad"]: r["mean"] for r in rows if r["metric"] == "params.M"}
    assert means == {"0.25": "5", "nan": "", "inf": ""}


def test_a_nan_report_stops_the_task_and_fails_the_cell_with_NAN_at_its_step(env):
    study = write(
        env / "nanrep.yaml", "values", {"bad": "nan", "at": 2}, "+variant: [a]", executor="{kind: debug}"
    )
    with Store() as store:
        launch(store, study)
        (s,) = ingest(store, study)
        assert (s.state, s.cause) == (CellState.FAILED, "NAN")
        assert s.detail == "NonFiniteMetric: loss=nan at step 2"
        assert store.metrics(s.key, final_only=False) == {"loss": 1.0, "lr": 0.1}  # step 1 and step 2's lr
    lines = [json.loads(line) for line in RunDir.of("runs", s.key).metrics.read_text().splitlines()]
    assert lines[-1]["metrics"] == {"lr": 0.1} and lines[-1]["nonfinite"] == {"loss": "nan"}  # strict JSON
    assert [line["step"] for line in lines] == [1, 2]  # the task stopped there


def test_a_nan_report_the_task_catches_still_fails_the_cell(env, tmp_path):
    (env / "catcher.py").write_text(
        "def run(config, ctx):\n"
        "    try:\n"
        "        ctx.report(1, {'loss': float('inf')})\n"
        "    except ValueError:\n"
        "        pass\n"
        "    return {'acc': 1.0}\n"
    )
    study = write(env / "catch.yaml", "echo", {"x": 1}, "x: [1]", executor="{kind: debug}")
    study.task = "catcher:run"
    sys.path.insert(0, str(env))
    try:
        with Store() as store:
            launch(store, study)
            (s,) = ingest(store, study)
    finally:
        sys.path.remove(str(env))
    assert (s.state, s.cause) == (CellState.FAILED, "NAN")
    assert s.detail == "NonFiniteMetric: it reported loss=inf at step 1"


def test_one_bad_run_directory_never_stops_the_others(env):
    """Truncated, unreadable, non-numeric or non-finite files: each cell gets a state that says so;
    the others are ingested; nothing raises."""
    study = write(env / "bad.yaml", "values", {"bad": "0.25"}, "+variant: [a, b, c, d, e, f, g]")
    runs = {c.labels["variant"]: RunDir.of("runs", c.key) for c in study.cells}
    with Store() as store:
        launch(store, study)
        wait_for(
            lambda: all((read_json(r.status) or {}).get("state") == "COMPLETED" for r in runs.values()),
            timeout=90,
            what="every cell to complete (not yet ingested)",
        )
        runs["a"].result.write_text('{"acc": 0.2')  # truncated
        runs["b"].result.write_text('{"acc": "high", "params.M": 5.0}')
        runs["c"].result.write_text('{"acc": {"top1": 1}, "params.M": 5.0}')
        runs["d"].result.write_text('{"acc": NaN, "params.M": 5.0}')  # as json.dump writes a nan
        runs["e"].metrics.unlink()
        runs["e"].metrics.mkdir()  # unreadable
        runs["f"].status.write_text("[1, 2")
        runs["g"].metrics.write_text(
            '{"step": 1, "metrics": {"loss": "x", "lr": 0.1}}\n[3]\n{"step": "two"}\n'
        )
        statuses = {s.labels["variant"]: s for s in ingest(store, study)}
        got = {v: (s.state, s.cause) for v, s in statuses.items()}
        assert got == {
            "a": ("FAILED", "EXCEPTION"),
            "b": ("FAILED", "EXCEPTION"),
            "c": ("FAILED", "EXCEPTION"),
            "d": ("FAILED", "NAN"),
            "e": ("COMPLETED", None),
            "f": ("COMPLETED", None),
            "g": ("COMPLETED", None),
        }
        assert "result.json is unreadable" in statuses["a"].detail
        assert statuses["b"].detail.startswith("result.json: acc='high'; expected a number")
        assert statuses["d"].detail == "result.json: acc=nan (the finite values are kept)"
        for v in "bcd":
            assert store.metrics(statuses[v].key) == {"params.M": 5.0}
        for v in "efg":
            assert store.metrics(statuses[v].key) == {"acc": 0.25, "params.M": 5.0}
        assert store.metrics(statuses["e"].key, final_only=False) == {"acc": 0.25, "params.M": 5.0}
        assert store.metrics(statuses["g"].key, final_only=False)["lr"] == 0.1


def test_a_resumed_attempts_steps_replace_those_of_the_attempt_before(env):
    study = write(
        env / "resumed.yaml",
        "steps",
        {"steps": 30, "dt": 0.05, "every": 10},
        "+variant: [a]",
        executor="{kind: local, parallelism: 1}",
    )
    key = study.cells[0].key
    run = RunDir.of("runs", key)
    with Store() as store:
        launch(store, study)
        wait_for(lambda: (run.last_report() or {}).get("step", 0) >= 15, what="15 steps")
        os.kill(read_json(run.status)["pid"], signal.SIGKILL)  # the checkpoint is at step 10
        (s,) = wait_done(store, study)
        assert (s.state, s.cause) == (CellState.INTERRUPTED, "KILLED")
        assert resume(store, study).keys == [key]
        (s,) = wait_done(store, study)
        assert s.state == CellState.COMPLETED and store.metrics(key)["resumed_from"] == 10
        lines = [json.loads(line) for line in run.metrics.read_text().splitlines()]
        assert [line["step"] for line in lines] == list(range(1, 31))  # 30 lines for 30 steps
        assert {line["attempt"] for line in lines if line["step"] > 10} == {2}
        with store.session() as sess:
            rows = sess.execute(
                text(
                    "SELECT step, attempt FROM metrics WHERE cell_key = :k AND step IS NOT NULL ORDER BY step"
                ),
                {"k": key},
            ).all()
        assert [r.step for r in rows] == list(range(1, 31))
        assert {r.step: r.attempt for r in rows} == {step: 1 if step <= 10 else 2 for step in range(1, 31)}


def test_reported_values_of_an_older_run_directory_keep_the_last_per_step(tmp_path):
    """Lines written before attempts were recorded, with a step reported twice and a cut line."""
    run = RunDir(tmp_path)
    run.metrics.write_text(
        '{"step": 1, "metrics": {"loss": 1.0}}\n{"step": 2, "metrics": {"loss": 0.9}}\n'
        '{"step": 2, "metrics": {"loss": 0.8}}\n{"step": 3, "met'
    )
    assert run.reported().values == {("loss", 1): (None, 1.0), ("loss", 2): (None, 0.8)}


def _final_rows(store: Store) -> int:
    with store.session() as s:
        return s.execute(text("SELECT COUNT(*) FROM metrics WHERE step IS NULL")).scalar()


def test_a_controller_that_saw_the_attempt_still_running_stores_nothing_twice(env, store_url):
    """Two controllers read a running attempt; the first records it completed, the second then
    ingests what it saw: each (cell, attempt, metric, step) is still stored once."""
    study = write(env / "twice.yaml", "values", {"bad": "0.25"}, "+variant: [a, b]", executor="{kind: debug}")
    with Store(store_url) as store:
        launch(store, study)
        assert _final_rows(store) == 4
        latest = store.latest_attempts([c.key for c in study.cells])
        store.update_attempts(
            [{"id": a.id, "cell_key": a.cell_key, "state": CellState.RUNNING} for a in latest.values()]
        )
        assert {s.state for s in ingest(store, study)} == {CellState.COMPLETED}
        assert _final_rows(store) == 4
        with store.session() as s:
            assert s.execute(text("SELECT COUNT(*) FROM metrics WHERE step IS NOT NULL")).scalar() == 2 * 6


def test_two_controllers_following_one_study_store_each_value_once(env, store_url):
    study = write(
        env / "follow.yaml",
        "echo",
        {"x": 1, "sleep": 0.05},
        "x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
        executor="{kind: local, parallelism: 2}",
    )
    with Store(store_url) as store:
        launch(store, study)

    def follow():
        with Store(store_url) as own:
            wait_done(own, study)

    threads = [threading.Thread(target=follow) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with Store(store_url) as store:
        assert {s.state for s in ingest(store, study)} == {CellState.COMPLETED}
        assert _final_rows(store) == 2 * len(study.cells)  # score and seed, once each


def test_a_requeued_run_of_the_same_attempt_replaces_the_steps_it_redoes(tmp_path):
    """SLURM requeues a job as the same attempt; resumed from a periodic checkpoint it redoes steps."""
    run = RunDir(tmp_path)

    def execution(steps, value):
        ctx = WorkerContext(run, tmp_path / "cache", "k", 1, 0, threading.Event())
        for step in steps:
            ctx.report(step, {"loss": value})

    execution(range(1, 6), 1.0)
    execution(range(4, 7), 2.0)  # its checkpoint was at step 3
    lines = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [(line["step"], line["metrics"]["loss"]) for line in lines] == [
        (1, 1.0),
        (2, 1.0),
        (3, 1.0),
        (4, 2.0),
        (5, 2.0),
        (6, 2.0),
    ]


def test_values_are_numbers_numpy_and_torch_scalars_included():
    import numpy as np
    import torch

    values = Values.of(
        {
            "a": np.float32(0.5),
            "b": torch.tensor(2.0),
            "c": np.int64(3),
            "d": True,
            "e": "0.5",
            "f": [1.0],
            "g": {"x": 1},
            "h": None,
            "i": float("-inf"),
            "j": np.nan,
        }
    )
    assert values.finite == {"a": 0.5, "b": 2.0, "c": 3.0, "d": 1.0}
    assert values.nonfinite == {"i": "-inf", "j": "nan"}
    assert set(values.invalid) == {"e", "f", "g", "h"}
