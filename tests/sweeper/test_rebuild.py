"""`sweeper rebuild`: the store is an index of the run directories, so it can be rebuilt from them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from sweeper.launch import launch, resume
from sweeper.run.rundir import RunDir, read_dict
from sweeper.store import CellState, Store
from tests.sweeper.orchestration import wait_done, wait_for, write

SWEEPER = str(Path(sys.executable).parent / "sweeper")


def _cli(*args: str) -> str:
    done = subprocess.run([SWEEPER, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _snapshot(study) -> dict:
    """What a user sees (reports, status) and what the store holds (attempts, every metric row)."""
    with Store() as store:
        attempts = {
            c.key: [(a.number, a.state, a.cause, a.detail, a.job_id) for a in store.attempts(c.key)]
            for c in study.cells
        }
        with store.session() as s:
            metrics = sorted(
                map(
                    tuple,
                    s.execute(text("SELECT cell_key, attempt, stage, name, step, value FROM metrics")).all(),
                ),
                key=str,
            )
    return {
        "csv": _cli("report", study.name, "--format", "csv"),
        "md": _cli("report", study.name, "--format", "markdown"),
        "status": _cli("status", study.name, "--json"),
        "attempts": attempts,
        "metrics": metrics,
    }


def test_rebuild_restores_attempts_states_causes_and_metrics_so_the_report_is_identical(env):
    study = write(env / "rb.yaml", "values", {"bad": "0.25"}, 'bad: ["0.25", "0.5", "nan"]', seeds=2)
    with Store() as store:
        launch(store, study)
        wait_done(store, study)
        assert len(resume(store, study, retry_failed=True).keys) == 2  # the NaN cells, once more
        statuses = wait_done(store, study)
    assert sorted((s.state, s.cause, s.attempt) for s in statuses) == [
        *[(CellState.COMPLETED, None, 1)] * 4,
        *[(CellState.FAILED, "NAN", 2)] * 2,
    ]
    before = _snapshot(study)
    assert len(before["metrics"]) == 6 * 6 + 4 * 2 + 2 * 1  # 3 steps x 2 values; finals (a NaN cell keeps 1)

    with Store() as store, store.session() as s, s.begin():  # a damaged store: the study's metrics lost
        s.execute(text("DELETE FROM metrics"))
    assert _cli("report", "rb", "--format", "csv") != before["csv"]
    out = _cli("rebuild", "rb.yaml")
    assert "rebuilt 6 cells" in out and "8 attempts" in out
    assert _snapshot(study) == before

    for path in env.glob("results.db*"):  # the whole store lost
        path.unlink()
    _cli("rebuild", "rb.yaml")
    assert _snapshot(study) == before


def test_rebuild_settles_a_cell_whose_ending_was_never_ingested(env):
    """A store lost before `status` ran: the last attempt is read from attempt.json, status.json
    and result.json, as ingestion reads it."""
    study = write(env / "late.yaml", "values", {"bad": "0.25"}, 'bad: ["0.25", "inf"]')
    with Store() as store:
        launch(store, study)
    runs = [RunDir.of("runs", c.key) for c in study.cells]
    wait_for(
        lambda: all(read_dict(r.status).get("state") in ("COMPLETED", "FAILED") for r in runs),
        timeout=60,
        what="both cells to end (not yet ingested)",
    )
    for path in env.glob("results.db*"):
        path.unlink()
    _cli("rebuild", "late.yaml")
    with Store() as store:
        statuses = wait_done(store, study)
        got = {
            c.config["bad"]: (s.state, s.cause, s.attempt) for c, s in zip(study.cells, statuses, strict=True)
        }
        assert got == {"0.25": (CellState.COMPLETED, None, 1), "inf": (CellState.FAILED, "NAN", 1)}
        assert store.metrics(study.cells[0].key) == {"acc": 0.25, "params.M": 5.0}
