"""The sweeper CLI: plan / studies / show, JSON output, and user errors (exit 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeper.cli import app

GOOD = """
study: demo
task: model.experiment:run
base:
  model: {scale: tiny, specialize: {}}
axes:
  model.specialize:
    baseline: {}
    norms: {norm1: all}
  model.scale: [tiny, small]
seeds: 2
baseline: baseline
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch):
    """Run the CLI in tmp_path against tmp_path/results.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEPER_DB", raising=False)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def test_plan_shows_counts_per_axis_value_and_records(run, write_study, tmp_path):
    path = write_study(GOOD)
    result = run("plan", str(path))
    assert result.exit_code == 0, result.output
    assert "demo: 8 cells (8 new, 0 running, 0 done, 0 failed, 0 orphaned)" in result.output
    assert "norms" in result.output and "small" in result.output
    assert (tmp_path / "results.db").exists()
    again = run("plan", str(path), "--json")
    data = json.loads(again.stdout)
    assert data["counts"]["new"] == 8 and data["added"] == [] and data["kept"] == 8
    assert data["per_axis"]["model.scale"]["small"] == {"new": 4}


def test_a_narrow_terminal_folds_axis_names_and_labels_instead_of_cutting_them(
    write_study, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    path = write_study(
        GOOD.replace("model.scale: [tiny, small]", "+train.optimizer_weight_decay: [0.05, 0.1]").replace(
            "norms: {norm1: all}", "norms_and_qkv_third: {norm1: all}"
        )
    )
    result = CliRunner().invoke(app, ["plan", str(path)], env={"COLUMNS": "50"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.count("│") > 3]
    axes, values = ("".join(row[i].strip() for row in rows) for i in (1, 2))  # folded lines joined back
    assert "train.optimizer_weight_decay" in axes and "model.specialize" in axes
    assert "norms_and_qkv_third" in values


def test_plan_reports_orphans_after_an_edit(run, write_study):
    path = write_study(GOOD)
    run("plan", str(path))
    path.write_text(GOOD.replace("[tiny, small]", "[tiny]"))
    data = json.loads(run("plan", str(path), "--json").stdout)
    assert (data["cells"], data["kept"], len(data["orphaned"])) == (4, 4, 4)
    shown = json.loads(run("show", "demo", "--json", "--state", "orphaned").stdout)
    assert len(shown) == 4 and all(c["labels"]["model.scale"] == "small" for c in shown)


def test_studies_and_show(run, write_study):
    run("plan", str(write_study(GOOD)))
    listing = run("studies")
    assert "demo" in listing.output and "8" in listing.output
    assert json.loads(run("studies", "--json").stdout)[0]["states"] == {"PLANNED": 8}
    shown = run("show", "demo")
    assert shown.output.count("planned") == 8
    assert run("show", str(write_study(GOOD))).exit_code == 0  # by file, too


def test_db_option_and_environment_variable(run, write_study, tmp_path, monkeypatch):
    path = write_study(GOOD)
    assert run("--db", f"sqlite:///{tmp_path / 'other.db'}", "plan", str(path), "-q").exit_code == 0
    assert (tmp_path / "other.db").exists() and not (tmp_path / "results.db").exists()
    monkeypatch.setenv("SWEEPER_DB", f"sqlite:///{tmp_path / 'env.db'}")
    assert run("plan", str(path), "-q").exit_code == 0
    assert (tmp_path / "env.db").exists()


def test_invalid_study_exits_2_and_records_nothing(run, write_study, tmp_path):
    path = write_study(GOOD.replace("model.scale:", "model.scael:"))
    result = run("plan", str(path))
    assert result.exit_code == 2
    assert (
        f"{path}: axes.model.scael: 'model.scael' is not in base (did you mean 'model.scale'?)"
        in result.stderr
    )
    assert not (tmp_path / "results.db").exists()


def test_unknown_study_exits_2(run, write_study):
    run("plan", str(write_study(GOOD)), "-q")
    result = run("show", "nope")
    assert result.exit_code == 2 and "no study named 'nope'" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("studies",),
        ("show", "demo"),
        ("status", "demo"),
        ("logs", "abc"),
        ("report", "demo"),
        ("resume", "demo"),
        ("cancel", "demo"),
        ("plot", "demo", "--x", "model.scale", "--y", "m", "--out", "p.png"),
    ],
)
def test_commands_that_read_the_store_never_create_one(run, tmp_path, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"no results store at {tmp_path / 'results.db'}" in result.stderr
    assert list(tmp_path.iterdir()) == []
    elsewhere = run("--db", str(tmp_path / "typo.db"), *args)
    assert elsewhere.exit_code == 2 and f"no results store at {tmp_path / 'typo.db'}" in elsewhere.stderr
    assert list(tmp_path.iterdir()) == []


def test_db_takes_a_plain_path_as_a_sqlite_file(run, write_study, tmp_path, monkeypatch):
    path = write_study(GOOD)
    (tmp_path / "stores").mkdir()
    assert run("--db", str(tmp_path / "stores" / "a.db"), "plan", str(path), "-q").exit_code == 0
    assert run("--db", "stores/a.db", "studies").output.count("demo") == 1  # relative to the cwd
    monkeypatch.setenv("SWEEPER_DB", "stores/a.db")
    assert json.loads(run("studies", "--json").stdout)[0]["cells"] == 8
    assert sorted(p.name for p in (tmp_path / "stores").iterdir())[0] == "a.db"
    assert not (tmp_path / "results.db").exists()


@pytest.mark.parametrize(
    ("args", "flag", "choices"),
    [
        (("show", "demo", "--state", "bogus"), "--state", "'planned'"),
        (("logs", "KEY", "--stream", "bogus"), "--stream", "'out', 'err', 'both'"),
    ],
)
def test_an_unknown_choice_is_refused_with_the_choices(run, write_study, monkeypatch, args, flag, choices):
    run("plan", str(write_study(GOOD)), "-q")
    monkeypatch.setenv("COLUMNS", "300")  # the message on one line
    result = run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Invalid value for '{flag}'" in result.stderr and "'bogus' is not one of" in result.stderr
    assert choices in result.stderr


def test_show_filters_by_state_in_any_case(run, write_study):
    run("plan", str(write_study(GOOD)), "-q")
    assert len(json.loads(run("show", "demo", "--json", "--state", "PLANNED").stdout)) == 8
    assert json.loads(run("show", "demo", "--json", "--state", "completed").stdout) == []


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("sweeper ")


def test_the_installed_command_prints_no_traceback(tmp_path, write_study):
    path = write_study(GOOD.replace("task: model.experiment:run", "task: model.experiment.run"))
    sweeper = Path(sys.executable).parent / "sweeper"
    proc = subprocess.run(
        [str(sweeper), "plan", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert (
        "task: expected a 'module.path:function' string, e.g. 'model.experiment:run', got "
        "'model.experiment.run'" in proc.stderr
    )


def test_only_matches_values_as_the_study_file_reads_them(run, write_study):
    path = write_study(GOOD.replace("model.scale: [tiny, small]", "+train.lr: [0.001, 0.01]"))
    would = {}
    for value in ("1e-3", "0.001", "1.0e-3", "0.01"):
        result = run("launch", str(path), "--dry-run", "--json", "--only", f"train.lr={value}")
        assert result.exit_code == 0, result.output
        would[value] = set(json.loads(result.stdout)["would_submit"])
    assert len(would["1e-3"]) == 4 and would["1e-3"] == would["0.001"] == would["1.0e-3"]
    assert would["0.01"].isdisjoint(would["0.001"])
    wrong = run("launch", str(path), "--dry-run", "--only", "train.lr=1e-4")
    assert wrong.exit_code == 2
    assert "--only train.lr=1e-4: '1e-4' is not a value of train.lr; values: 0.001, 0.01" in wrong.stderr


def test_a_bare_executor_kind_is_its_mapping(run, write_study):
    path = write_study(GOOD + "executor: debug\n")
    result = run("launch", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would submit 8 cells with the debug executor" in result.output


def test_status_piped_keeps_every_key_label_and_detail_whole(env):
    from tests.sweeper.orchestration import write

    long = "a_variant_name_long_enough_to_push_the_failed_table_past_eighty_columns"
    study = write(env / "wide.yaml", "boom", {"x": 1}, f"x: {{{long}: 1, short: 2}}", executor="debug")
    runner = CliRunner()
    assert runner.invoke(app, ["launch", "wide.yaml"], catch_exceptions=False).exit_code == 0
    result = runner.invoke(app, ["status", "wide"], env={"COLUMNS": "80"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "ValueError" in line]
    assert len(rows) == 2 and all(c.key in result.output for c in study.cells)
    assert any(long in row and "ValueError: bad value x=1" in row for row in rows)  # one line each, whole


def test_help_paragraphs_reflow_to_the_terminal_width():
    """A docstring's source line breaks are not kept: at 80 columns no line ends mid-sentence short."""
    result = CliRunner().invoke(app, ["rehearse", "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert "(the real model, framework, crops and schedules;" in " ".join(result.output.split())
    assert "model, framework, crops" in result.output  # one line, not broken where the source is
