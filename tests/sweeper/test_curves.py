"""Training curves: values reported per step, one curve per resumed cell, bands over seeds on
aligned steps, `sweeper plot --x step` and `sweeper.curves`."""

from __future__ import annotations

import math

import pytest
import typer
from typer.testing import CliRunner

import sweeper
from sweeper.cli.common import Options
from sweeper.cli.plot import plot_command
from sweeper.errors import UserError
from sweeper.report.options import ErrorBar
from sweeper.report.plot import curve_data, make_figure
from sweeper.store import CellState, Store
from tests.sweeper.test_report import write

LOSS = "pretrain.loss"


def loss(variant: str, seed: int, step: int) -> float:
    return (2.0 if variant == "baseline" else 1.0) + seed - 0.01 * step


def report(store: Store, key: str, attempt: int, values: dict[int, float], name: str = LOSS) -> None:
    store.add_metric_rows(
        [
            {"cell_key": key, "attempt": attempt, "stage": "report", "name": name, "step": s, "value": v}
            for s, v in values.items()
        ]
    )


@pytest.fixture
def study_store(store_url, write_study):
    """Every cell reports the loss at steps 0, 10, …, 50; cell (norms, small, 0) was resumed at step 30."""
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        for c in study.cells:
            v = c.labels["model.specialize"]
            store.add_attempt(c.key, executor="debug", state=CellState.COMPLETED)
            report(store, c.key, 1, {s: loss(v, c.seed, s) for s in range(0, 60, 10)})
        yield store, study


def cell(study, variant: str, scale: str, seed: int) -> str:
    return next(
        c.key
        for c in study.cells
        if (c.labels["model.specialize"], c.labels["model.scale"], c.seed) == (variant, scale, seed)
    )


def test_a_resumed_cell_is_one_curve_the_later_attempt_superseding_from_its_first_step(study_store):
    store, study = study_store
    key = cell(study, "norms", "small", 0)
    store.add_attempt(key, executor="debug", state=CellState.RUNNING)
    report(store, key, 2, {30: 100.0, 40: 101.0})  # redid 30 and 40 from its checkpoint; 50 not yet
    curve = sweeper.curves("abl", db=store.url)
    mine = curve[curve["key"] == key]
    assert list(mine["step"]) == [0, 10, 20, 30, 40]  # the first attempt's 50 was redone from 30 on: gone
    assert list(mine["value"]) == pytest.approx([1.0, 0.9, 0.8, 100.0, 101.0])
    assert set(curve.columns) == {
        "key",
        "model.specialize",
        "model.scale",
        "seed",
        "state",
        "metric",
        "step",
        "value",
    }
    assert len(curve) == 12 * 6 - 1


def test_curves_mean_over_seeds_with_a_std_or_ci_band(study_store):
    store, _ = study_store
    data = curve_data(store, "abl", LOSS, hue="model.specialize", col="model.scale")
    row = data.set_index(["model.scale", "model.specialize", "step"]).loc[("base", "norms", 20)]
    assert (row["mean"], row["err"], row["n"]) == (pytest.approx(1.8), pytest.approx(1.0), 3)  # seeds 0, 1, 2
    ci = curve_data(store, "abl", LOSS, hue="model.specialize", error=ErrorBar.ci)
    row = ci.set_index(["model.specialize", "step"]).loc[("baseline", 0)]
    t_975_df5 = 2.570581835636314  # Student t, 97.5 % quantile, 5 degrees of freedom (tables)
    # no --col: both scales pooled with the seeds, 6 curves of values 2, 3, 4 twice
    assert row["n"] == 6 and row["err"] == pytest.approx(t_975_df5 * math.sqrt(0.8) / math.sqrt(6))


def test_seeds_logging_at_other_steps_are_read_at_the_common_steps(study_store):
    store, study = study_store
    key = cell(study, "baseline", "base", 2)
    store.replace_metrics([key], [])
    report(store, key, 1, {0: 4.0, 25: 3.5, 50: 3.0})  # another log interval
    data = curve_data(store, "abl", LOSS, hue="model.specialize", col="model.scale")
    base = data[(data["model.scale"] == "base") & (data["model.specialize"] == "baseline")].set_index("step")
    assert list(base.index) == [0, 10, 20, 25, 30, 40, 50]
    assert base.loc[10, "mean"] == pytest.approx((1.9 + 2.9 + 3.8) / 3)  # seed 2 interpolated at 10
    assert base.loc[25, "n"] == 3 and base.loc[25, "mean"] == pytest.approx((1.75 + 2.75 + 3.5) / 3)


def test_the_figure_has_a_line_and_a_band_per_hue_and_says_what_the_band_is(study_store):
    store, _ = study_store
    fig = make_figure(store, "abl", x="step", y=LOSS, hue="model.specialize", col="model.scale")
    base, small = fig.axes
    assert [len(base.lines), len(base.collections)] == [2, 2]  # baseline and norms, each with a band
    assert fig.get_suptitle() == "abl: mean over seeds"
    ci = make_figure(store, "abl", x="step", y=LOSS, error=ErrorBar.ci)
    assert ci.legends[0].get_texts()[-1].get_text() == "band: 95 % t interval of the mean"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "baseline",
        "norms",
        "band: ± std over seeds",
    ]


def test_curve_errors_name_the_flag(study_store):
    store, _ = study_store
    with pytest.raises(UserError, match="--y pretrain.los: matches no reported .*mean 'pretrain.loss'"):
        curve_data(store, "abl", "pretrain.los")
    with pytest.raises(UserError, match="--hue model.spec: not an axis"):
        curve_data(store, "abl", LOSS, hue="model.spec")


def test_plot_command_step_writes_the_curves(study_store, monkeypatch, tmp_path):
    store, _ = study_store
    app = typer.Typer()
    app.command("plot")(plot_command)
    app.command("other")(lambda: None)
    monkeypatch.setattr(Options, "db", store.url)
    result = CliRunner().invoke(
        app,
        [
            "plot",
            "abl",
            "--x",
            "step",
            "--y",
            LOSS,
            "--hue",
            "model.specialize",
            "--col",
            "model.scale",
            "--out",
            str(tmp_path / "loss.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_sweeper_curves_is_the_function_whatever_was_imported_before():
    import sweeper.report.plot  # noqa: F401 - imports the module that computes the curves

    assert callable(sweeper.curves) and sweeper.curves.__doc__.startswith("Every value the cells")
