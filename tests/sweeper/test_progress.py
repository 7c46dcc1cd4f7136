"""What `--wait` says while it follows a study: plain lines outside a terminal (on a change of counts
and at least every SWEEPER_PROGRESS_S seconds) with an ETA, step/total of running cells, and the
debug executor naming the cell it runs."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sweeper.cli.views import running_cells
from sweeper.ingest import CellStatus
from sweeper.launch import launch
from sweeper.progress import Eta, Lines
from sweeper.store import CellState, Store
from tests.sweeper.orchestration import write

SWEEPER = str(Path(sys.executable).parent / "sweeper")


def cells(*states: str, progress: dict | None = None) -> list[CellStatus]:
    return [
        CellStatus(f"k{i}", {"x": i}, s, progress=progress if s == CellState.RUNNING else None)
        for i, s in enumerate(states)
    ]


def test_a_line_on_each_change_of_counts_and_at_least_every_n_seconds():
    lines = Lines("abl", every=30)
    first = lines.line(cells("PENDING", "PENDING"), None, now=lines.start)
    assert first == "abl: 0/2 done, 0 running, 0 failed, 2 pending; 0s elapsed, no ETA yet"
    assert lines.line(cells("PENDING", "PENDING"), None, now=lines.start + 10) is None  # nothing new
    assert "1 running" in lines.line(cells("RUNNING", "PENDING"), None, now=lines.start + 12)
    quiet = lines.line(cells("RUNNING", "PENDING"), 95.0, now=lines.start + 42.5)  # 30 s without a change
    assert quiet == "abl: 0/2 done, 1 running, 0 failed, 1 pending; 42s elapsed, ETA 1m35s"
    end = lines.line(cells("COMPLETED", "FAILED"), 0.0, now=lines.start + 50)
    assert end == "abl: 1/2 done, 0 running, 1 failed, 0 pending; 50s elapsed, finished"


def test_the_eta_uses_finished_durations_and_the_running_cells_step_of_total(store_url, tmp_path):
    study = write(tmp_path / "eta.yaml", "echo", {"x": 0}, "x: [1, 2, 3, 4, 5]")
    with Store(store_url) as store:
        store.plan(study)
        keys = [c.key for c in study.cells]
        start = datetime(2026, 1, 1, tzinfo=UTC)
        for key, seconds in zip(keys[:2], (100, 300), strict=False):
            store.add_attempt(
                key,
                executor="local",
                state=CellState.COMPLETED,
                started_at=start,
                ended_at=start + timedelta(seconds=seconds),
            )
        for key in keys[2:4]:
            store.add_attempt(key, executor="local", state=CellState.RUNNING, started_at=start)
        statuses = [
            CellStatus(keys[0], {}, "COMPLETED"),
            CellStatus(keys[1], {}, "COMPLETED"),
            CellStatus(keys[2], {}, "RUNNING", progress={"step": 75, "total": 100}),
            CellStatus(keys[3], {}, "RUNNING", progress={"step": 3}),  # no total: by its time
            CellStatus(keys[4], {}, "PENDING"),
        ]
        eta = Eta()
        assert eta.remaining(statuses) is None  # no duration known yet
        eta.update(store, statuses)
        assert eta.durations == {keys[0]: 100.0, keys[1]: 300.0}
        assert set(eta.started) == {keys[2], keys[3]}
        # mean 200 s x (0.25 + 0.5 run for 100 s of 200 + 1 pending) cells of work over 2 running lanes
        assert eta.remaining(statuses, now=start + timedelta(seconds=100)) == pytest.approx(200 * 1.75 / 2)
        # past the mean duration: a tenth of one left, never a negative time
        assert eta.remaining(statuses, now=start + timedelta(seconds=900)) == pytest.approx(200 * 1.35 / 2)


def test_the_live_view_shows_step_of_total_for_running_cells():
    text = running_cells(cells("RUNNING", "COMPLETED", progress={"step": 5, "total": 20})).plain
    assert "k0 0  step 5/20 (25%)" in text and "k1" not in text
    assert "step 7\n" in running_cells(cells("RUNNING", progress={"step": 7})).plain


def test_launch_wait_in_a_pipe_prints_progress_lines_with_an_eta(env, monkeypatch):
    write(
        env / "steps.yaml",
        "steps",
        {"steps": 40, "dt": 0.1},
        "dt: [0.1, 0.11]",
        executor="{kind: local, parallelism: 1}",
    )
    monkeypatch.setenv("SWEEPER_PROGRESS_S", "1")
    done = subprocess.run(
        [SWEEPER, "launch", "steps.yaml", "--wait"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("steps: ")]
    assert lines[-1].startswith("steps: 2/2 done, 0 running, 0 failed, 0 pending;")
    assert lines[-1].endswith("finished")
    assert any(re.search(r"1/2 done, 1 running, .* ETA \d+s$", ln) for ln in lines)  # once one has finished
    repeated = [a for a, b in zip(lines, lines[1:], strict=False) if a.split(";")[0] == b.split(";")[0]]
    assert repeated  # the same counts again a second later: never silent while a cell runs


def test_the_debug_executor_says_which_cell_it_runs(env, capsys):
    study = write(env / "dbg.yaml", "echo", {"x": 0}, "x: [1, 2]", executor="{kind: debug}")
    with Store() as store:
        launch(store, study)
    said = capsys.readouterr().err
    for i, c in enumerate(study.cells, 1):
        assert f"dbg: running cell {i}/2 {c.key}" in said


def test_a_failing_tasks_traceback_names_its_cell(env, capfd):
    study = write(env / "bad.yaml", "boom", {"x": 0}, "x: [1, 2]", executor="{kind: debug}")
    with Store() as store:
        launch(store, study)
    said = capfd.readouterr().err
    for c in study.cells:
        header = f"sweeper: the task failed on cell {c.key} ({env / 'runs' / 'cells' / c.key})"
        assert header in said and said.index(header) < said.index(f"bad value x={c.config['x']}")
