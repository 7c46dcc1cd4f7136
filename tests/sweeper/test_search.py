"""Search inside a study: the `search:` block, ask/tell through the store, pruning, resuming, reporting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sweeper.errors import SpecError, UserError
from sweeper.launch import advance, cancel, launch, resume
from sweeper.run.rundir import RunDir
from sweeper.search import results
from sweeper.store import CellState, SearchCell, Store
from sweeper.study import TRIAL_LABEL, load_study, parse_study
from tests.sweeper.orchestration import (
    PRUNING_SEARCH,
    run_search,
    runs_per_cell,
    wait_for,
)
from tests.sweeper.orchestration import write as write_plain

BOWL_SPACE = """\
    x: {type: float, low: -3, high: 3}
    y: {type: float, low: -3, high: 3}
    lr: {type: float, low: 1.0e-6, high: 1.0, log: true}"""


def study_text(
    name: str,
    task: str,
    base: dict,
    search: str,
    *,
    axes: str = "",
    executor: str = "{kind: debug}",
    extra: str = "",
) -> str:
    return "\n".join(
        [
            f"study: {name}",
            f"task: tests.sweeper.tasks:{task}",
            f"base: {json.dumps(base)}",
            *(["axes:", textwrap.indent(axes, "  ")] if axes else []),
            f"executor: {executor}",
            "search:",
            textwrap.indent(textwrap.dedent(search), "  "),
            extra,
            "",
        ]
    )


def write(path: Path, *args, **kwargs):
    path.write_text(study_text(path.stem, *args, **kwargs))
    return load_study(path)


def bowl(env: Path, name: str, sampler: str, trials: int, **kwargs):
    search = f"metric: f\ndirection: minimize\ntrials: {trials}\nsampler: {sampler}\nspace:\n{BOWL_SPACE}\n"
    return write(
        env / f"{name}.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "log": str(env / "runs.log")},
        search + kwargs.pop("search", ""),
        **kwargs,
    )


def trial_rows(store: Store, study) -> list[SearchCell]:
    with store.session() as s:
        return [r for r in s.query(SearchCell).order_by(SearchCell.id) if r.kind == "trial"]


# ----------------------------------------------------------------------------- the study file


@pytest.mark.parametrize(
    ("search", "where", "expected"),
    [
        ("space: {x: {type: float, low: 2, high: 1}}", "search.space.x", "expected low < high"),
        (
            "space: {x: {type: float, low: 0, high: 1, log: true}}",
            "search.space.x",
            "a log scale needs low > 0",
        ),
        (
            "space: {x: {low: 0, high: 1}}",
            "search.space.x",
            "expected a mapping with type: float, int or categorical",
        ),
        ("space: {x: {type: float, low: 0, hihg: 1}}", "search.space.x.hihg", "did you mean 'high'"),
        ("space: {z: [1, 2]}", "search.space.z", "'z' is not in base"),
        ("space: {kind: [a, b]}", "search.space.kind", "is set by the axis 'kind'"),
        ("space: {x: [1, 2]}\ngroup_by: [knd]", "search.group_by[0]", "unknown axis (did you mean 'kind'?)"),
        (
            "space: {x: {type: float, low: 0, high: 1}}\nsampler: grid",
            "search.space.x",
            "the grid sampler needs",
        ),
        (
            "space: {x: [1, 2]}\nsampler: tpe\nsampler_options: {n_startup: 3}",
            "search.sampler_options.n_startup",
            "did you mean 'n_startup_trials'",
        ),
        (
            "space: {x: [1, 2]}\nsampler: annealing",
            "search.sampler",
            "'tpe', 'random', 'grid', 'gp' or 'cmaes'",
        ),
        ("space: {x: [1, 2]}\npruner: {kind: median, n_warmup: 2}", "search.pruner.n_warmup", "unknown key"),
        ("space: {x: [1, 1]}", "search.space.x", "duplicate choices"),
    ],
)
def test_a_bad_search_block_gets_one_clear_message_naming_the_key(search, where, expected):
    text = study_text(
        "bad",
        "bowl",
        {"x": 0, "kind": "a"},
        f"metric: f\ndirection: minimize\ntrials: 4\n{search}",
        axes="kind: [a, b]",
    )
    with pytest.raises(SpecError) as info:
        parse_study(text, "bad.yaml")
    problems = dict(info.value.problems)
    assert where in problems, problems
    assert expected in problems[where]


def test_a_search_runs_each_trial_with_one_seed():
    text = study_text(
        "s",
        "bowl",
        {"x": 0},
        "metric: f\ndirection: minimize\ntrials: 4\nspace: {x: [1, 2]}",
        extra="seeds: 3",
    )
    with pytest.raises(SpecError, match="search.final_seeds"):
        parse_study(text, "s.yaml")


def test_final_seeds_are_seeds_the_trials_did_not_run_with():
    search = "metric: f\ndirection: minimize\ntrials: 4\nspace: {x: [1, 2]}\nfinal_seeds: %s"
    plan = parse_study(study_text("s", "bowl", {"x": 0}, search % "3", extra="seeds: [2]"), "s.yaml").search
    assert plan.final_seeds == [0, 1, 3]
    with pytest.raises(SpecError) as info:
        parse_study(study_text("s", "bowl", {"x": 0}, search % "[0, 1]"), "s.yaml")
    assert "seed 0 is the seed the trials run with" in dict(info.value.problems)["search.final_seeds"]


def test_groups_follow_group_by_and_the_other_axes_are_searched():
    text = study_text(
        "s",
        "bowl",
        {"x": 0.0, "kind": "a", "depth": 1},
        "metric: f\ndirection: minimize\ntrials: 5\nspace: {x: [1, 2]}\ngroup_by: [kind]",
        axes="kind: [a, b, c]\ndepth: [1, 2]",
    )
    plan = parse_study(text, "s.yaml").search
    assert [g["kind"] for g in plan.groups.values()] == ["a", "b", "c"]
    assert [a.name for a in plan.searched] == ["depth"] and plan.parallel == 1


# ----------------------------------------------------------------------------- samplers


def test_tpe_finds_a_better_value_than_random_within_the_same_budget(env):
    best = {}
    with Store() as store:
        for sampler in ("tpe", "random"):
            study = bowl(env, sampler, sampler, 40)
            launch(store, study)
            (group,) = results(store, study)
            assert sum(group.counts.values()) == group.counts["completed"] == 40
            best[sampler] = group.best.value
    assert best["tpe"] < best["random"] / 3, best


@pytest.mark.parametrize("sampler", ["gp", "cmaes"])
def test_gp_and_cma_es_samplers_run_a_search(env, sampler):
    study = bowl(env, sampler, sampler, 12)
    with Store() as store:
        launch(store, study)
        (group,) = results(store, study)
    assert group.counts["completed"] == 12 and group.best.value < 5


def test_grid_search_never_repeats_a_point_even_with_several_in_flight(env):
    study = write(
        env / "grid.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "log": str(env / "runs.log")},
        """\
        metric: f
        direction: minimize
        sampler: grid
        trials: 50
        parallel: 4
        space:
          x: [-1, 0, 1]
          y: {type: int, low: -2, high: 1}
          lr: {type: float, low: 0.001, high: 0.003, step: 0.001}
        """,
    )
    assert study.search.budget == 36
    with Store() as store:
        launch(store, study)
        rows = trial_rows(store, study)
    points = [(r.params["x"], r.params["y"], r.params["lr"]) for r in rows]
    assert len(points) == 36 and len(set(points)) == 36
    assert set(runs_per_cell(env / "runs.log").values()) == {1}


def test_a_config_asked_twice_is_one_cell_run_once(env):
    study = write(
        env / "twice.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "log": str(env / "runs.log")},
        "metric: f\ndirection: minimize\ntrials: 6\nsampler: random\nspace: {x: [0.5, 0.7]}\n",
    )
    with Store() as store:
        launch(store, study)
        rows = trial_rows(store, study)
        (group,) = results(store, study)
    assert [r.number for r in rows] == list(range(6))
    assert len({r.cell_key for r in rows}) == 2
    assert set(runs_per_cell(env / "runs.log").values()) == {1}
    assert group.counts["completed"] == 6 and group.best.row.params == {"x": 0.7}


# ----------------------------------------------------------------------------- groups, final seeds, report


def test_each_group_gets_its_own_search_and_its_best_repeated_with_final_seeds(env):
    base = {"x": 0.0, "y": 0.0, "lr": 0.1, "log": str(env / "runs.log")}
    study = write(
        env / "groups.yaml",
        "bowl",
        base,
        """\
        metric: f
        direction: minimize
        trials: 8
        sampler: random
        final_seeds: 3
        space: {x: {type: float, low: -3, high: 3}}
        """,
        axes="y: [0.0, -1.2]",
    )
    with Store() as store:
        launch(store, study)
        groups = results(store, study)
        assert [g.labels for g in groups] == [{"y": 0.0}, {"y": -1.2}]
        # One slot at a time: the groups' searches advance together, not one after the other.
        asked = [r.labels["y"] for r in trial_rows(store, study)]
        assert asked == [0.0, -1.2] * 8
        for g in groups:
            trials = [r for r in trial_rows(store, study) if r.labels["y"] == g.labels["y"]]
            values = [store.metrics(r.cell_key)["f"] for r in trials]
            assert len(trials) == 8 and g.best.value == min(values)
            assert len(g.finals) == 3 and set(g.finals.values()) == {CellState.COMPLETED}
            assert g.final_values == [g.best.value] * 3  # bowl ignores the seed
        shown = {c.key: c for c in store.cells(study.name)}
        trial_keys = {r.cell_key for r in trial_rows(store, study)}
        for g in groups:
            seeds = sorted(shown[k].labels["seed"] for k in g.finals)
            assert seeds == [1, 2, 3]
            assert {shown[k].labels[TRIAL_LABEL] for k in g.finals} == {g.best.row.number}
            # Fresh runs: the selected trial's own cell (seed 0) is not one of its repeats.
            assert g.best.row.cell_key not in g.finals and not trial_keys & set(g.finals)
    assert runs_per_cell(env / "runs.log") == {k: 1 for g in groups for k in [*g.finals, *trial_keys]}


def test_report_shows_the_best_trial_per_group_and_the_final_seed_table(env):
    from typer.testing import CliRunner

    from sweeper.cli import app

    study = write(
        env / "rep.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1},
        """\
        metric: f
        direction: minimize
        trials: 5
        sampler: random
        final_seeds: 2
        space: {x: {type: float, low: -3, high: 3}}
        """,
        axes="y: {near: 1.0, far: 3.0}",
        extra="baseline: near",
    )
    with Store() as store:
        launch(store, study)
        groups = results(store, study)
    runner = CliRunner()
    got = runner.invoke(app, ["report", "rep", "-f", "csv"])
    assert got.exit_code == 0, got.output
    lines = got.output.strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
    assert [r["y"] for r in rows] == ["near", "far"]
    for row, g in zip(rows, groups, strict=False):
        assert float(row["best_value"]) == pytest.approx(g.best.value)
        assert float(row["x"]) == pytest.approx(g.best.row.params["x"])
        assert (row["trials"], row["completed"], row["final_n"]) == ("5", "5", "2")
    final = runner.invoke(app, ["report", "rep", "--final", "-f", "csv"])
    assert final.exit_code == 0, final.output
    table = [
        dict(zip(final.output.splitlines()[0].split(","), line.split(","), strict=False))
        for line in final.output.strip().splitlines()[1:]
    ]
    far = next(r for r in table if r["y"] == "far")
    near = next(r for r in table if r["y"] == "near")
    assert float(far["mean"]) == pytest.approx(groups[1].best.value) and far["n"] == "2"
    # Paired against the baseline's final seeds; lower f is better for this search, so `near` is best.
    assert float(far["delta"]) == pytest.approx(groups[1].best.value - groups[0].best.value)
    assert (near["best"], far["best"]) == ("True", "False")
    shown = runner.invoke(app, ["report", "rep"], env={"COLUMNS": "200"})
    assert "best f" in shown.output and "final seeds" in shown.output and "±" in shown.output


# ----------------------------------------------------------------------------- pruning, killing, resuming


def test_pruned_trials_are_stopped_and_recorded(env):
    study = write(
        env / "prune.yaml",
        "curve",
        {"x": 0.5, "steps": 12, "dt": 0.1, "log": str(env / "runs.log")},
        PRUNING_SEARCH,
        executor="{kind: local, parallelism: 1}",
    )
    with Store() as store:
        statuses = run_search(store, study)
        (group,) = results(store, study)
        rows = trial_rows(store, study)
        assert len(rows) == 6 and group.counts["pruned"] >= 1, group.counts
        completed = sorted(store.metrics(r.cell_key)["val.loss"] for r in rows if store.metrics(r.cell_key))
        for r in rows:
            if r.cell_key in {s.key for s in statuses if s.state == CellState.PRUNED}:
                run = RunDir.of(env / "runs", r.cell_key)
                assert len(run.reports()) < 12  # stopped part-way
                assert r.params["x"] > completed[0]  # worse than the best completed trial
                history = store.attempts(r.cell_key)[-1]
                assert (history.state, history.cause) == (
                    CellState.PRUNED,
                    "PRUNED",
                ) and "median pruner" in history.detail
                with store.session() as s:
                    from sweeper.store import Metric

                    steps = [m.step for m in s.query(Metric).filter_by(cell_key=r.cell_key, stage="report")]
                assert steps and None not in steps  # its intermediate values are in the store
        # Pruned is final: a resume does not run them again.
        assert resume(store, study).keys == []


def test_resuming_after_the_controller_is_killed_continues_the_count(env):
    study_file = env / "kill.yaml"
    write(
        study_file,
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "sleep": 0.4, "log": str(env / "runs.log")},
        "metric: f\ndirection: minimize\ntrials: 8\nsampler: tpe\nparallel: 2\nspace:\n" + BOWL_SPACE + "\n",
        executor="{kind: local, parallelism: 2}",
    )
    sweeper = str(Path(sys.executable).parent / "sweeper")
    cmd = [sweeper, "launch", str(study_file), "--wait"]
    controller = subprocess.Popen(cmd, cwd=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with Store() as store:
        study = load_study(study_file)
        wait_for(lambda: len(trial_rows(store, study)) >= 3, timeout=60, what="three trials")
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait()
        before = len(trial_rows(store, study))
        assert before < 8
    done = subprocess.run(
        [sweeper, "resume", str(study_file), "--wait"], cwd=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with Store() as store:
        rows = trial_rows(store, study)
        (group,) = results(store, study)
    assert [r.number for r in rows] == list(range(8))
    assert group.counts == {"completed": 8, "pruned": 0, "failed": 0, "running": 0}
    # Every cell ran once: the trials recorded before the kill were not asked or run again.
    runs = runs_per_cell(env / "runs.log")
    assert set(runs.values()) == {1} and set(runs) == {r.cell_key for r in rows}


def test_two_controllers_at_once_share_the_budget_and_never_repeat(env, store_url):
    """The step that rebuilds, asks and records holds the study's lock (SQLite and PostgreSQL)."""
    study_file = env / "both.yaml"
    write(
        study_file,
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "log": str(env / "runs.log")},
        """\
        metric: f
        direction: minimize
        sampler: grid
        trials: 12
        parallel: 3
        space:
          x: [-1, 0, 1]
          y: [-1, 0, 1, 2]
        """,
    )
    sweeper = str(Path(sys.executable).parent / "sweeper")
    cmd = [sweeper, "--db", store_url, "launch", str(study_file), "--wait"]
    procs = [
        subprocess.Popen(cmd, cwd=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    for p in procs:
        output = p.communicate(timeout=180)[0]
        assert p.returncode == 0, output
    with Store(store_url) as store:
        rows = trial_rows(store, load_study(study_file))
    assert sorted(r.number for r in rows) == list(range(12))
    assert len({(r.params["x"], r.params["y"]) for r in rows}) == 12
    assert set(runs_per_cell(env / "runs.log").values()) == {1}


def test_the_readme_search_block_is_valid():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("### Searching hyperparameters", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    text = "\n".join(
        [
            "study: readme",
            "task: model.experiment:run",
            "base: {model: {specialize: {}}, train: {lr: 0.001, weight_decay: 0.05, warmup_steps: 10}, "
            "framework: {loss: ce}}",
            "axes: {model.specialize: {baseline: {}, norms: {norm1: all}}}",
            block,
        ]
    )
    plan = parse_study(text, "README.md").search
    assert len(plan.groups) == 2 and plan.budget == 16 and plan.final_seeds == [1, 2, 3]
    assert set(plan.params) == {"train.lr", "train.weight_decay", "train.warmup_steps", "framework.loss"}


def test_trials_that_do_not_return_the_metric_count_as_failed_and_the_report_says_why(env):
    from typer.testing import CliRunner

    from sweeper.cli import app

    study = write(
        env / "typo.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1},
        "metric: F\ndirection: minimize\ntrials: 3\nsampler: random\nspace: {x: [0.5, 0.7]}\n"
        "pruner: median\n",
    )
    assert any("nothing is pruned" in w for w in study.warnings)
    with Store() as store:
        launch(store, study)
        (group,) = results(store, study)
    assert group.best is None and len(group.unscored) == 3
    shown = CliRunner().invoke(app, ["report", "typo", "-f", "markdown"])
    assert "3 completed trials returned no finite 'F'" in shown.output and "returned: f" in shown.output


def test_the_notebook_api_gives_every_trial_with_its_params(env):
    import sweeper

    study = bowl(env, "nb", "random", 4, search="final_seeds: [1, 5]\n")
    with Store() as store:
        launch(store, study)
    frame = sweeper.trials("nb")
    assert list(frame["kind"]) == ["trial"] * 4 + ["final"] * 2
    assert list(frame.columns[:3]) == ["kind", "trial", "seed"] and {"x", "y", "lr", "f", "state"} <= set(
        frame.columns
    )
    done = frame[frame["kind"] == "trial"]
    best = done.loc[done["f"].idxmin()]
    assert list(frame[frame["kind"] == "final"]["trial"]) == [best["trial"]] * 2
    plain = write_plain(env / "plain.yaml", "echo", {"x": 1}, "x: [1]", executor="{kind: debug}")
    with Store() as store:
        launch(store, plain)
    with pytest.raises(UserError, match="no search block"):
        sweeper.trials("plain")


def test_only_selects_the_groups_a_launch_searches(env):
    study = write(
        env / "only.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "depth": 1},
        """\
        metric: f
        direction: minimize
        trials: 3
        sampler: random
        group_by: [y]
        space: {x: [0.1, 0.2, 0.3]}
        """,
        axes="y: {near: 0.0, far: 3.0}\ndepth: [1, 2]",
    )
    with Store() as store:
        launch(store, study, only=["y=far"])
        assert [sum(g.counts.values()) for g in results(store, study)] == [0, 3]
        with pytest.raises(UserError, match="'depth' is searched over, not a group"):
            launch(store, study, only=["depth=2"])
        launch(store, study)
        assert [sum(g.counts.values()) for g in results(store, study)] == [3, 3]


def test_the_check_runs_once_on_each_group_and_a_problem_submits_nothing(env):
    study = write(
        env / "checked.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "root": str(env / "data")},
        "metric: f\ndirection: minimize\ntrials: 2\nspace: {x: [0.5, 0.7]}\n",
        axes="y: [0.0, 1.0]",
        extra="check: tests.sweeper.tasks:check",
    )
    with Store() as store:
        with pytest.raises(UserError, match="data does not exist"):
            launch(store, study)
        assert trial_rows(store, study) == []
        (env / "data").mkdir()
        launch(store, study)
        assert len(trial_rows(store, study)) == 4


def test_report_trials_lists_every_trial_best_first_per_group(env):
    from typer.testing import CliRunner

    from sweeper.cli import app

    study = write(
        env / "all.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1},
        """\
        metric: f
        direction: minimize
        trials: 4
        sampler: random
        final_seeds: [1, 2]
        space: {x: {type: float, low: -3, high: 3}}
        """,
        axes="y: {near: 1.0, far: 3.0}",
    )
    with Store() as store:
        launch(store, study)
    got = CliRunner().invoke(app, ["report", "all", "--trials", "-f", "csv"])
    assert got.exit_code == 0, got.output
    lines = got.output.strip().splitlines()
    rows = [dict(zip(lines[0].split(","), line.split(","), strict=False)) for line in lines[1:]]
    assert [(r["y"], r["kind"]) for r in rows] == [("near", "trial")] * 4 + [("near", "final")] * 2 + [
        ("far", "trial")
    ] * 4 + [("far", "final")] * 2
    for group in ("near", "far"):
        values = [float(r["f"]) for r in rows if r["y"] == group and r["kind"] == "trial"]
        assert values == sorted(values)
    assert "x" in lines[0] and "state" in lines[0]
    plain = write_plain(env / "plain.yaml", "echo", {"x": 1}, "x: [1]", executor="{kind: debug}")
    with Store() as store:
        launch(store, plain)
    refused = CliRunner().invoke(app, ["report", "plain", "--trials"])
    assert refused.exit_code == 2 and "no search block" in refused.output


def test_cancel_pauses_a_search_and_resume_continues_it(env):
    study = write(
        env / "pause.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1, "sleep": 3.0},
        """\
        metric: f
        direction: minimize
        trials: 4
        sampler: random
        parallel: 2
        space: {x: {type: float, low: -3, high: 3}}
        """,
        executor="{kind: local, parallelism: 2}",
    )
    with Store() as store:
        launch(store, study)
        assert len(cancel(store, study)) == 2
        statuses, moved = advance(store, study)  # what a `--wait` elsewhere does next: nothing
        assert not moved and len(trial_rows(store, study)) == 2
        assert {s.state for s in statuses} == {CellState.CANCELLED}
        assert len(resume(store, study).keys) == 2
        run_search(store, study)
        (group,) = results(store, study)
    assert group.counts["completed"] == 4


def test_plot_a_searched_parameter_against_the_metric(env):
    from typer.testing import CliRunner

    from sweeper.cli import app

    study = bowl(env, "land", "random", 6, axes="+variant: [a, b]")
    with Store() as store:
        launch(store, study)
    runner = CliRunner()
    got = runner.invoke(app, ["plot", "land", "--x", "lr", "--y", "f", "--hue", "variant", "-o", "land.png"])
    assert got.exit_code == 0, got.output
    assert (env / "land.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import sweeper
    from sweeper.report.plot import trial_points

    frame = sweeper.trials("land")
    points = trial_points(study, frame, "lr", "f", "variant")
    assert len(points) == 12 and list(points.columns) == ["variant", "lr", "f"]
    assert sorted(points["f"]) == sorted(frame[frame["kind"] == "trial"]["f"])
    wrong = runner.invoke(app, ["plot", "land", "--x", "lr", "--y", "g", "-o", "x.png"])
    assert wrong.exit_code == 2 and "plot the search's metric (f)" in wrong.output
    hue = runner.invoke(app, ["plot", "land", "--x", "lr", "--y", "f", "--hue", "varaint", "-o", "x.png"])
    assert hue.exit_code == 2 and "did you mean 'variant'" in hue.output


def test_a_sampler_option_optuna_rejects_is_one_message_and_records_nothing(env):
    study = bowl(env, "opts", "tpe", 3, search='sampler_options: {n_startup_trials: "abc"}\n')
    with Store() as store:
        with pytest.raises(UserError, match="search.sampler_options: optuna's tpe sampler failed"):
            launch(store, study)
        assert trial_rows(store, study) == []
