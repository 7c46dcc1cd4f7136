"""A study's run directory is resolved once, recorded absolute, and used from any directory."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.run.rundir import RunDir, read_json
from tests.sweeper.orchestration import write


def test_resume_status_and_report_by_name_from_elsewhere_use_the_launch_run_directory(env, monkeypatch):
    here, there = env / "x", env / "y"
    here.mkdir(), there.mkdir()
    # timeout_min 0.05: the lane stops the cell after 3 s, at a checkpoint; `resume` continues it
    write(
        here / "moved.yaml",
        "steps",
        {"steps": 80, "dt": 0.05, "every": 10},
        "+variant: [a]",
        extra="resources: {default: {timeout_min: 0.05}}",
    )
    runner = CliRunner()

    def sweeper(*args: str):
        db = f"sqlite:///{here / 'results.db'}"
        result = runner.invoke(app, ["--db", db, *args], catch_exceptions=False)
        assert result.exit_code in (0, 1), result.output
        return result

    monkeypatch.chdir(here)
    sweeper("launch", "moved.yaml", "--wait")
    (status,) = json.loads(sweeper("status", "moved", "--json").output)
    assert (status["state"], status["cause"]) == ("INTERRUPTED", "TIMEOUT")
    run = RunDir.of(here / "runs", status["key"])
    stopped_at = read_json(run.path / "ckpt.json")["step"]

    monkeypatch.chdir(there)
    assert sweeper("resume", "moved", "--wait").exit_code == 0
    assert not (there / "runs").exists()
    (status,) = json.loads(sweeper("status", "moved", "--json").output)
    assert status["state"] == "COMPLETED"
    assert read_json(run.result) == {"steps": 80.0, "resumed_from": float(stopped_at)}
    report = sweeper("report", "moved")
    assert report.exit_code == 0 and "resumed_from" in report.output


def test_a_v2_store_gains_the_recorded_run_directory(env):
    from sqlalchemy import text

    from sweeper.store import SCHEMA_VERSION, Meta, Store

    with Store() as store, store.session() as s, s.begin():
        s.execute(text("ALTER TABLE studies DROP COLUMN workdir"))  # as a store written in v2
        s.execute(text("DROP INDEX ux_metrics_once"))
        s.execute(text("ALTER TABLE metrics DROP COLUMN attempt"))
        s.get(Meta, "schema_version").value = "2"
    study = write(env / "old.yaml", "echo", {"x": 1}, "+variant: [a]")
    with Store() as store:
        assert store.schema_version == SCHEMA_VERSION
        store.plan(study)
        assert store.workdir(study) == str(env / "runs")
