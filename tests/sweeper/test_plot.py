"""`sweeper plot`: the plotted means and error bars, per-block curves, files written, user errors."""

from __future__ import annotations

import math

import pytest
import typer
from matplotlib.colors import to_hex
from typer.testing import CliRunner

from sweeper.cli.common import Options
from sweeper.cli.plot import plot_command
from sweeper.errors import UserError
from sweeper.report.load import load
from sweeper.report.options import ErrorBar
from sweeper.report.plot import make_figure, plot_data
from sweeper.store import Store
from tests.sweeper.test_report import MIOU, T_975_DF2, finish, write

NORM1 = "analysis.procedural.block{}.cos_cls_patch_pre_norm1"
NORM2 = "analysis.procedural.block{}.cos_cls_patch_pre_norm2"


def cos(variant: str, block: int, seed: int) -> float:
    """Baseline CLS-patch cosine stays high; specialization drives it to ~0 in early blocks."""
    return (0.5 if variant == "baseline" else 0.1 * block) + 0.01 * seed


@pytest.fixture
def store(store_url, write_study):
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store,
            study,
            {
                (v, s, seed): {
                    "linear_seg.ade20k.miou": MIOU[v, s][seed],
                    **{NORM1.format(b): cos(v, b, seed) for b in range(4)},
                    **{NORM2.format(b): 2 * cos(v, b, seed) for b in range(4)},
                }
                for v, s in MIOU
                for seed in range(3)
            },
        )
        yield store


def test_metric_against_an_axis_per_hue_with_std_or_ci_bars(store):
    data = plot_data(load(store, "abl", ["*.miou"]), x="model.scale", hue="model.specialize")
    row = data.set_index(["model.specialize", "model.scale"]).loc[("norms", "base")]
    assert (row["mean"], row["err"], row["n"]) == (pytest.approx(53), pytest.approx(math.sqrt(7)), 3)
    ci = plot_data(load(store, "abl", ["*.miou"]), x="model.scale", hue="model.specialize", error=ErrorBar.ci)
    row = ci.set_index(["model.specialize", "model.scale"]).loc[("baseline", "small")]
    assert row["err"] == pytest.approx(T_975_DF2 * 1 / math.sqrt(3))


def test_per_block_curves_parse_the_block_index_and_split_families(store):
    data = plot_data(
        load(store, "abl", [NORM1.format("*")]), x="block", hue="model.specialize", col="model.scale"
    )
    assert "family" not in data
    curve = data[(data["model.specialize"] == "norms") & (data["model.scale"] == "small")]
    assert list(curve["block"]) == [0, 1, 2, 3]
    assert list(curve["mean"]) == pytest.approx([0.01, 0.11, 0.21, 0.31])  # seeds 0..2 add 0.01 on average
    both = plot_data(load(store, "abl", ["analysis.*.cos_cls_patch_*"]), x="block", hue="model.specialize")
    assert set(both["family"]) == {NORM1.format("*"), NORM2.format("*")}
    assert len(both) == 2 * 2 * 4  # variants x families x blocks


def test_plot_errors_are_user_errors(store):
    with pytest.raises(UserError, match="--x model.scal: not an axis.*did you mean 'model.scale'"):
        plot_data(load(store, "abl", ["*.miou"]), x="model.scal")
    with pytest.raises(UserError, match="--y matches 9 metrics"):
        plot_data(load(store, "abl", ["*"]), x="model.scale")
    with pytest.raises(UserError, match="no block<N> name segment: linear_seg.ade20k.miou"):
        plot_data(load(store, "abl", ["*"]), x="block")


@pytest.fixture
def cli(store, monkeypatch, tmp_path):
    app = typer.Typer()
    app.command("plot")(plot_command)
    app.command("other")(lambda: None)
    monkeypatch.setattr(Options, "db", store.url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["plot", *args], catch_exceptions=False)


@pytest.mark.parametrize(("name", "magic"), [("miou.png", b"\x89PNG"), ("miou.pdf", b"%PDF")])
def test_plot_command_writes_a_non_empty_file(cli, tmp_path, name, magic):
    result = cli(
        "abl",
        "--x",
        "model.scale",
        "--y",
        "linear_seg.ade20k.miou",
        "--hue",
        "model.specialize",
        "--error",
        "ci",
        "--out",
        name,
    )
    assert result.exit_code == 0, result.output
    data = (tmp_path / name).read_bytes()
    assert data.startswith(magic) and len(data) > 1000


def test_plot_command_block_curves_in_panels(cli, tmp_path):
    result = cli(
        "abl",
        "--x",
        "block",
        "--y",
        "analysis.*.cos_cls_patch_pre_norm1",
        "--hue",
        "model.specialize",
        "--col",
        "model.scale",
        "--out",
        "tokens.png",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tokens.png").stat().st_size > 1000


def test_plot_command_rejects_an_unknown_file_type(cli):
    result = cli("abl", "--x", "model.scale", "--y", "*.miou", "--out", "plot.jpgg")
    assert result.exit_code == 2 and not (result.output or "").count("Traceback")


def test_plot_command_says_a_missing_directory_or_an_unknown_metric_in_one_line(cli, tmp_path):
    result = cli("abl", "--x", "model.scale", "--y", "*.miou", "--out", str(tmp_path / "missing" / "c.png"))
    assert result.exit_code == 2 and "Traceback" not in result.output
    missing = tmp_path / "missing"
    assert f"--out {missing / 'c.png'}: there is no directory {missing}" in result.stderr
    result = cli("abl", "--x", "model.scale", "--y", "*.mio", "--out", "c.png")
    assert result.exit_code == 2 and "--y *.mio: matches no final metric of study 'abl'" in result.stderr
    assert "--metric" not in result.stderr


@pytest.fixture
def partial(store_url, write_study):
    """Single seeds; the norms variant only at scale small (as while a study is still running)."""
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store,
            study,
            {
                (v, s, 0): {
                    "linear_seg.ade20k.miou": MIOU[v, s][0],
                    **{NORM1.format(b): cos(v, b, 0) for b in range(4)},
                }
                for v, s in MIOU
                if (v, s) != ("baseline", "small")
            },
        )
        yield store


def test_the_legend_lists_the_hues_of_every_panel_in_one_colour_each(partial):
    fig = make_figure(
        partial, "abl", x="block", y=NORM1.format("*"), hue="model.specialize", col="model.scale"
    )
    base, small = fig.axes
    assert [base.get_title(), small.get_title()] == ["model.scale = base", "model.scale = small"]
    assert len(base.containers) == 2 and len(small.containers) == 1  # baseline and norms; norms only
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "model.specialize"
    assert [t.get_text() for t in legend.get_texts()] == ["baseline", "norms"]
    colour = {
        t.get_text(): to_hex(h.get_color())
        for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    assert colour["baseline"] != colour["norms"]
    starts = {
        ax: {c.lines[0].get_ydata()[0]: to_hex(c.lines[0].get_color()) for c in ax.containers}
        for ax in fig.axes
    }
    assert starts[base] == {0.5: colour["baseline"], 0.0: colour["norms"]}  # cos() at block 0, seed 0
    assert starts[small] == {0.0: colour["norms"]}


def test_block_ticks_are_whole_blocks_and_the_y_label_names_the_metric(store):
    fig = make_figure(store, "abl", x="block", y="analysis.*.cos_cls_patch_pre_norm1", hue="model.specialize")
    ax = fig.axes[0]
    assert [t for t in ax.get_xticks() if 0 <= t <= 3] == [0, 1, 2, 3]
    # a name longer than a panel is tall breaks after its dots (it was cut at the figure's edge)
    assert ax.get_ylabel() == "analysis.procedural.block<N>.\ncos_cls_patch_pre_norm1"
    one = make_figure(store, "abl", x="model.scale", y="*.miou")
    assert one.axes[0].get_ylabel() == "linear_seg.ade20k.miou"
    both = make_figure(store, "abl", x="block", y="analysis.*", hue="model.specialize")
    assert both.axes[0].get_ylabel() == "analysis.procedural.block<N>.…"  # what the families share
    assert [t.get_text() for t in both.legends[0].get_texts()] == [
        f"{v}, cos_cls_patch_pre_norm{n}" for n in (1, 2) for v in ("baseline", "norms")
    ]


def test_the_title_says_what_the_bars_are(store):
    three = make_figure(store, "abl", x="model.scale", y="*.miou", hue="model.specialize", error=ErrorBar.ci)
    assert three.get_suptitle() == "abl: mean over seeds, bars: 95 % t interval"
    assert all(len(seg) == 2 for c in three.axes[0].containers for seg in c.lines[2][0].get_segments())


def test_the_title_mentions_no_bars_where_none_are_drawn(partial):
    one = make_figure(partial, "abl", x="model.scale", y="*.miou", hue="model.specialize")
    assert one.get_suptitle() == "abl: one seed per point, no error bars"
    assert all(len(seg) == 0 for c in one.axes[0].containers for seg in c.lines[2][0].get_segments())
