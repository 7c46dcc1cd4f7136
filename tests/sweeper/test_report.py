"""`sweeper report`: aggregates against hand-computed numbers, partial studies, shared cells,
every export format parsed back, the CLI command and the notebook API."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import subprocess

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from sweeper.api import load as api_load
from sweeper.cli.common import Options
from sweeper.cli.report import report_command
from sweeper.errors import SpecError, UserError
from sweeper.report import tables as report_tables
from sweeper.report.console import print_table
from sweeper.report.load import direction
from sweeper.report.options import Format
from sweeper.report.statistics import build
from sweeper.report.tables import (
    _entries,
    _legend,
    render,
    render_coverage,
    render_rich,
)
from sweeper.store import CellState, Store
from sweeper.study import load_study
from tests.conftest import IN_CI

STUDY = """
study: {name}
task: model.experiment:run
base:
  model: {{scale: small, specialize: {{}}}}
axes:
  model.specialize:
{variants}
  model.scale: [small, base]
seeds: 3
baseline: {baseline}
"""
VARIANTS = {"baseline": "{}", "norms": "{norm1: all}"}
T_975_DF2 = 4.302652729911275  # Student t, 97.5 % quantile, 2 degrees of freedom (tables)


def write(write_study, name="abl", variants=VARIANTS, baseline="baseline", file="abl.yaml"):
    body = "\n".join(f"    {k}: {v}" for k, v in variants.items())
    return load_study(write_study(STUDY.format(name=name, variants=body, baseline=baseline), file))


def finish(
    store: Store, study, values: dict[tuple, dict[str, float]], states: dict[tuple, str] | None = None
):
    """Give cells (variant, scale, seed) a final state and final metrics."""
    by_labels = {(c.labels["model.specialize"], c.labels["model.scale"], c.seed): c.key for c in study.cells}
    for labels, metrics in values.items():
        attempt = store.add_attempt(by_labels[labels], executor="debug", state=CellState.RUNNING)
        store.update_attempt(attempt, state=CellState.COMPLETED)
        store.add_metrics(by_labels[labels], "eval", metrics)
    for labels, state in (states or {}).items():
        store.add_attempt(by_labels[labels], executor="debug", state=state)


MIOU = {
    ("baseline", "small"): [40, 41, 42],
    ("norms", "small"): [42, 44, 43],
    ("baseline", "base"): [50, 52, 54],
    ("norms", "base"): [51, 52, 56],
}
RMSE = {
    ("baseline", "small"): [0.5, 0.5, 0.5],
    ("norms", "small"): [0.4, 0.45, 0.5],
    ("baseline", "base"): [0.3, 0.3, 0.3],
    ("norms", "base"): [0.3, 0.3, 0.3],
}


@pytest.fixture
def full(store_url, write_study):
    study = write(write_study)
    store = Store(store_url)
    store.plan(study)
    finish(
        store,
        study,
        {
            (v, s, seed): {
                "linear_seg.ade20k.miou": MIOU[v, s][seed],
                "linear_depth.nyu.rmse": RMSE[v, s][seed],
                "params.total": 22e6 if v == "baseline" else 22.1e6,
                "analysis.procedural.block0.cos_cls_patch_pre_norm1": 0.1,
            }
            for v, s in MIOU
            for seed in range(3)
        },
    )
    yield store, study
    store.close()


def cell(summary, variant, scale, metric):
    c = summary.cells
    (row,) = c[
        (c["model.specialize"] == variant) & (c["model.scale"] == scale) & (c["metric"] == metric)
    ].to_dict("records")
    return row


def test_direction_rule():
    assert direction("linear_seg.ade20k.miou") == 1 and direction("knn.imagenet.top1") == 1
    assert direction("linear_depth.nyu.rmse") == -1 and direction("linear_depth.nyu.absrel") == -1
    assert direction("train.loss") == -1 and direction("val.top1_err") == -1
    assert direction("params.extra_pct") == 0 and direction("flops.fwd") == 0
    assert direction("analysis.procedural.block3.cos_cls_patch_pre_norm1") == 0
    # Times, cross-entropies, perplexities and word error rates are lower-is-better (issue 14.8) …
    for name in ("pretrain.seconds", "lm.val.ce", "lm.wiki.ppl", "asr.libri.wer", "linear_depth.nyu.abs_rel"):
        assert direction(name) == -1, name
    for name in ("linear_depth.nyu.delta1", "linear_seg.ade20k.pixel_acc", "pretrain.img_per_s", "det.ap50"):
        assert direction(name) == 1, name
    # … and a name that says neither is not guessed: it is never marked best.
    assert direction("pretrain.steps") == 0 and direction("pretrain.koleo") == 0
    # A study's declared globs come first, in order.
    assert direction("pretrain.steps", {"*.steps": 1}) == 1
    assert direction("pretrain.loss", {"pretrain.loss": 0, "*.loss": -1}) == 0


def test_means_stds_and_paired_deltas_match_hand_computation(full):
    store, _ = full
    summary = build(store, "abl")
    assert summary.rows == ["model.specialize"] and summary.cols == ["model.scale"]
    # Default metrics: scores first, then params; per-block analysis metrics left out.
    assert summary.metrics == ["linear_depth.nyu.rmse", "linear_seg.ade20k.miou", "params.total"]
    base = cell(summary, "baseline", "small", "linear_seg.ade20k.miou")
    assert (base["mean"], base["std"], base["n"], base["expected"]) == (41, 1, 3, 3)
    assert math.isnan(base["delta"]) and base["flags"] == ""
    norms = cell(summary, "norms", "small", "linear_seg.ade20k.miou")
    assert norms["mean"] == pytest.approx(43) and norms["std"] == pytest.approx(1)
    # Paired differences 2, 3, 1: mean 2, sd 1, n 3.
    half = T_975_DF2 * 1 / math.sqrt(3)
    assert norms["delta"] == pytest.approx(2) and norms["delta_n"] == 3
    assert (norms["ci_low"], norms["ci_high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    # ViT-B: differences 1, 0, 2 -> mean 1, sd 1; mean 53 ± 2.6458 (sample std of 51, 52, 56).
    norms_b = cell(summary, "norms", "base", "linear_seg.ade20k.miou")
    assert norms_b["mean"] == pytest.approx(53) and norms_b["std"] == pytest.approx(math.sqrt(7))
    assert norms_b["delta"] == pytest.approx(1) and norms_b["ci_low"] == pytest.approx(1 - half)
    # Best per column: highest mIoU, lowest RMSE; params are neither better nor worse.
    assert norms["best"] and not base["best"]
    assert cell(summary, "norms", "small", "linear_depth.nyu.rmse")["best"]
    assert cell(summary, "norms", "small", "linear_depth.nyu.rmse")["delta"] == pytest.approx(-0.05)
    assert not cell(summary, "norms", "small", "params.total")["best"]
    # A tie is best for both.
    assert cell(summary, "norms", "base", "linear_depth.nyu.rmse")["best"]
    assert cell(summary, "baseline", "base", "linear_depth.nyu.rmse")["best"]


def test_rows_cols_and_metric_globs(full):
    store, _ = full
    summary = build(
        store, "abl", rows=["model.scale"], cols=["model.specialize"], metrics=["*.miou", "params.*"]
    )
    assert summary.metrics == ["linear_seg.ade20k.miou", "params.total"]
    assert cell(summary, "norms", "small", "linear_seg.ade20k.miou")["delta"] == pytest.approx(2)
    # Rows only, pooling the other axis on purpose: 6 values per group (see test_pooling_is_asked_for).
    pooled = build(
        store,
        "abl",
        rows=["model.specialize"],
        cols=[],
        metrics=["linear_seg.ade20k.miou"],
        pool=["model.scale"],
    )
    assert pooled.pooled == ["model.scale"]
    assert pooled.cells.set_index("model.specialize")["mean"].to_dict() == pytest.approx(
        {"baseline": 46.5, "norms": 48}
    )
    # Character classes and '?' are honoured exactly, though SQL only pre-filters with LIKE.
    assert build(store, "abl", metrics=["linear_[sd]e?.*.miou"]).metrics == ["linear_seg.ade20k.miou"]


def test_user_errors_name_the_problem_with_a_did_you_mean(full):
    store, _ = full
    with pytest.raises(UserError, match=r"--rows model\.scal: not an axis.*did you mean 'model\.scale'"):
        build(store, "abl", rows=["model.scal"])
    with pytest.raises(
        UserError,
        match=r"--metric linear_seg\.ade20k\.mio: matches no final metric.*"
        r"did you mean 'linear_seg\.ade20k\.miou'",
    ):
        build(store, "abl", metrics=["linear_seg.ade20k.mio"])
    with pytest.raises(UserError, match="aggregates over seeds"):
        build(store, "abl", rows=["seed"])
    with pytest.raises(UserError, match="share model.scale"):
        build(store, "abl", rows=["model.scale"], cols=["model.scale"])
    with pytest.raises(UserError, match="no study named 'abk'.*did you mean 'abl'"):
        build(store, "abk")


def test_partial_study_flags_missing_running_and_failed_seeds(store_url, write_study):
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        done = {("baseline", "small", s): {"m.top1": 70 + s} for s in range(3)}
        done |= {("norms", "small", 0): {"m.top1": 75}, ("norms", "small", 1): {"m.top1": 73}}
        done |= {("baseline", "base", 0): {"m.top1": 80}}
        finish(
            store,
            study,
            done,
            states={("norms", "small", 2): CellState.RUNNING, ("baseline", "base", 1): CellState.FAILED},
        )
        summary = build(store, "abl")
        norms = cell(summary, "norms", "small", "m.top1")
        assert (norms["n"], norms["expected"], norms["flags"]) == (2, 3, "*")
        assert norms["delta"] == pytest.approx(((75 - 70) + (73 - 71)) / 2) and norms["delta_n"] == 2
        base = cell(summary, "baseline", "base", "m.top1")
        assert (base["n"], base["flags"]) == (1, "†‡")  # one failed, one never run
        assert math.isnan(base["std"])
        missing = cell(summary, "norms", "base", "m.top1")
        assert missing["n"] == 0 and math.isnan(missing["mean"]) and missing["flags"] == "‡"
        cov = summary.coverage.set_index(["model.specialize", "model.scale"])
        assert cov.loc[("norms", "small")].to_dict() == {
            "done": 2,
            "running": 1,
            "failed": 0,
            "new": 0,
            "total": 3,
        }
        assert cov.loc[("baseline", "base")].to_dict() == {
            "done": 1,
            "running": 0,
            "failed": 1,
            "new": 1,
            "total": 3,
        }
        text = render_coverage(summary, Format.markdown)
        assert "| baseline | 3/3 ✓ | 1/3 ✗1 ·1 |" in text and "| norms | 2/3 ⟳1 | 0/3 ·3 |" in text
        md = render(summary, Format.markdown)
        assert "n=2/3\\*" in md and "n=1/3" in md
        assert "some seeds are still running" in md and "not been run yet" in md


def test_one_delta_pair_has_no_interval(store_url, write_study):
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store, study, {("baseline", "small", 0): {"a.top1": 1.0}, ("norms", "small", 0): {"a.top1": 1.5}}
        )
        norms = cell(build(store, "abl"), "norms", "small", "a.top1")
        assert norms["delta"] == 0.5 and norms["delta_n"] == 1 and math.isnan(norms["ci_low"])


def test_two_studies_sharing_cells_report_each_with_its_own_labels(store_url, write_study):
    a = write(write_study)
    # Study b names the same two configs differently and has its own baseline.
    b = write(
        write_study, name="b", variants={"plain": "{}", "n1": "{norm1: all}"}, baseline="n1", file="b.yaml"
    )
    assert {c.key for c in a.cells} == {c.key for c in b.cells}
    with Store(store_url) as store:
        store.plan(a)
        store.plan(b)
        finish(store, a, {(v, s, seed): {"x.top1": MIOU[v, s][seed]} for v, s in MIOU for seed in range(3)})
        sa, sb = build(store, "abl"), build(store, "b")
        assert (
            cell(sb, "plain", "small", "x.top1")["mean"]
            == cell(sa, "baseline", "small", "x.top1")["mean"]
            == 41
        )
        # b's baseline is the norms config: deltas have the opposite sign.
        assert cell(sb, "plain", "small", "x.top1")["delta"] == pytest.approx(-2)
        assert set(sb.cells["model.specialize"]) == {"plain", "n1"}
        frame = api_load("b", db=store.url)
        assert len(frame) == 12 and set(frame["model.specialize"]) == {"plain", "n1"}


def test_orphaned_cells_and_superseded_values_are_not_reported(store_url, write_study):
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(store, study, {(v, s, seed): {"x.top1": 1.0} for v, s in MIOU for seed in range(3)})
        key = next(
            c.key
            for c in study.cells
            if c.labels["model.specialize"] == "baseline"
            and c.seed == 0
            and c.labels["model.scale"] == "small"
        )
        store.add_metrics(key, "eval", {"x.top1": 4.0})  # re-ingested: the last recorded wins
        store.plan(write(write_study, variants={"baseline": "{}"}))  # norms leaves the file
        summary = build(store, "abl")
        assert set(summary.cells["model.specialize"]) == {"baseline"}
        assert cell(summary, "baseline", "small", "x.top1")["mean"] == pytest.approx(2.0)


# ----------------------------------------------------------------------------- formats parse back


def test_markdown_is_a_pipe_table_with_one_cell_per_column(full):
    store, _ = full
    text = render(build(store, "abl"), Format.markdown)
    table = [line for line in text.splitlines() if line.startswith("|")]
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    assert len({len(r) for r in rows}) == 1 and len(rows[0]) == 1 + 2 * 3
    assert rows[0][:3] == [
        "model.specialize",
        "model.scale=small · linear_depth.nyu.rmse",
        "model.scale=small · linear_seg.ade20k.miou",
    ]
    assert set(rows[1][1:]) == {"---:"}
    by_variant = {r[0]: r for r in rows[2:]}
    assert by_variant["baseline"][2] == "41.0 ± 1.0"
    assert by_variant["norms"][2].startswith("**43.0 ± 1.0** (+2.0 [-0.5, +4.5])")
    assert by_variant["norms"][3] == "22.1M"  # parameters: no std (constant), no delta (neutral)


def test_latex_is_a_booktabs_tabular_with_matching_columns(full):
    store, _ = full
    text = render(build(store, "abl"), Format.latex)
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text).group(1)
    body = text[text.index(r"\midrule") + len(r"\midrule") : text.index(r"\bottomrule")]
    rows = [r for r in body.split(r"\\") if r.strip()]
    assert len(rows) == 2
    for row in rows:
        assert len(re.split(r"(?<!\\)&", row)) == len(spec) == 1 + 6
    header = text.splitlines()[3]
    assert header.count(r"\multicolumn{3}{c}") == 2
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1
    assert r"model.specialize & linear\_depth.nyu.rmse" in text  # underscores escaped
    assert r"$\mathbf{43.0} \pm 1.0$ {\scriptsize $+2.0$ $[-0.5, +4.5]$}" in text
    assert text.count("{") == text.count("}")


def test_csv_and_json_round_trip(full):
    store, _ = full
    summary = build(store, "abl")
    records = list(csv.DictReader(io.StringIO(render(summary, Format.csv))))
    assert len(records) == 2 * 2 * 3
    row = next(
        r
        for r in records
        if (r["model.specialize"], r["model.scale"], r["metric"])
        == ("norms", "small", "linear_seg.ade20k.miou")
    )
    assert (
        float(row["mean"]) == 43
        and float(row["std"]) == 1
        and int(row["n"]) == 3
        and float(row["delta"]) == 2
    )
    assert float(row["ci_low"]) == pytest.approx(2 - T_975_DF2 / math.sqrt(3))
    doc = json.loads(render(summary, Format.json))
    assert doc["baseline"] == {"model.specialize": "baseline"} and doc["rows"] == ["model.specialize"]
    cells = {(c["model.specialize"], c["model.scale"], c["metric"]): c for c in doc["cells"]}
    assert cells["norms", "base", "linear_seg.ade20k.miou"]["delta"] == pytest.approx(1)
    assert cells["baseline", "base", "linear_seg.ade20k.miou"]["delta"] is None  # NaN -> null, valid JSON
    assert doc["coverage"][0] == {
        "model.specialize": "baseline",
        "model.scale": "small",
        "done": 3,
        "running": 0,
        "failed": 0,
        "new": 0,
        "total": 3,
    }


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def cli(full, monkeypatch, tmp_path):
    store, _ = full
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)  # two commands, so `report` is a subcommand as in sweeper's app
    monkeypatch.setattr(Options, "db", store.url)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["report", *args], catch_exceptions=False)


def test_cli_writes_the_format_its_out_file_names(cli, tmp_path):
    result = cli("abl", "--out", "t.tex")
    assert result.exit_code == 0, result.output
    assert r"\begin{tabular}" in (tmp_path / "t.tex").read_text()
    assert cli("abl", "-m", "*.miou", "--format", "json", "--out", "t.txt").exit_code == 0
    assert json.loads((tmp_path / "t.txt").read_text())["metrics"] == ["linear_seg.ade20k.miou"]


def test_cli_rich_and_coverage(cli):
    result = cli("abl", "--metric", "*.miou")
    assert result.exit_code == 0
    assert "43.0 ± 1.0" in result.output and "+2.0 [-0.5, +4.5]" in result.output
    coverage = cli("abl", "--coverage")
    assert "3/3 ✓" in coverage.output and "43.0" not in coverage.output


def test_cli_user_error_exits_2_without_traceback(cli):
    result = cli("abl", "--rows", "scale")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_api_load_returns_cells_by_metrics(full):
    store, study = full
    frame = api_load("abl", db=store.url)
    assert list(frame.columns[:6]) == ["key", "model.specialize", "model.scale", "seed", "state", "category"]
    assert list(frame["key"]) == [c.key for c in study.cells]
    assert "analysis.procedural.block0.cos_cls_patch_pre_norm1" in frame.columns  # every final metric
    norms_small = frame[(frame["model.specialize"] == "norms") & (frame["model.scale"] == "small")]
    assert list(norms_small["linear_seg.ade20k.miou"]) == [42, 44, 43]
    assert list(api_load("abl", db=store.url, metrics="*.rmse").columns[6:]) == ["linear_depth.nyu.rmse"]


def test_a_study_with_nothing_run_yet_shows_its_coverage(store_url, write_study, monkeypatch):
    study = write(write_study, baseline="null")
    with Store(store_url) as store:
        store.plan(study)
        summary = build(store, "abl")
        assert summary.metrics == [] and summary.baseline is None
        assert set(summary.coverage["new"]) == {3}
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)
    monkeypatch.setattr(Options, "db", store_url)
    result = CliRunner().invoke(app, ["report", "abl"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output.count("0/3 ·3") == 4


def test_a_metric_named_like_a_label_column_does_not_shadow_it(store_url, write_study):
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store,
            study,
            {
                (v, s, seed): {"seed": 99.0, "linear_seg.ade20k.miou": MIOU[v, s][seed]}
                for v, s in MIOU
                for seed in range(3)
            },
        )
        summary = build(store, "abl")
    assert summary.metrics == ["linear_seg.ade20k.miou"]
    norms = summary.cells[
        (summary.cells["model.specialize"] == "norms") & (summary.cells["model.scale"] == "small")
    ]
    assert norms["delta"].iloc[0] == pytest.approx((2 + 3 + 1) / 3)  # still paired by the real seed


def invoke(store_url, monkeypatch, *args, env=None):
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)
    monkeypatch.setattr(Options, "db", store_url)
    return CliRunner().invoke(app, ["report", *args], env=env, catch_exceptions=False)


# ----------------------------------------------------------------------------- issue 14.7: never cropped

WIDE_METRICS = [
    "linear_seg.ade20k.miou",
    "linear_seg.ade20k.pixel_acc",
    "linear_depth.nyu.rmse",
    "linear_depth.nyu.abs_rel",
    "linear_depth.nyu.delta1",
    "knn.in1k.top1",
    "knn.in1k.top5",
    "linear.in1k.top1",
    "pretrain.loss",
    "pretrain.seconds",
    "pretrain.steps",
    "pretrain.img_per_s",
    "params.total",
    "params.extra_pct",
    "flops.fwd",
]


@pytest.fixture
def wide(store_url, write_study):
    """15 metrics × 2 scales: 30 value columns, each with a delta and its interval for norms."""
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store,
            study,
            {
                (v, s, seed): {
                    m: 10.0 * i
                    + 3.7 * seed
                    + 1.3 * (v == "norms")
                    + 50 * (s == "base")
                    + 0.11 * seed * (v == "norms")
                    for i, m in enumerate(WIDE_METRICS)
                }
                for v, s in MIOU
                for seed in range(3)
            },
        )
        yield store, build(store, "abl")


def expected_texts(summary) -> list[str]:
    """Every value, spread, delta and interval the table must show, as the rich table writes them."""
    texts = []
    for row in _entries(summary).values():
        for e in row.values():
            texts.append(e.value + (f" ± {e.spread}" if e.spread else ""))
            texts += [f"{e.delta} {e.interval}".strip()] if e.delta else []
    return texts


@pytest.mark.parametrize("fold", [False, True])
def test_a_wide_report_piped_or_written_keeps_every_column_and_value(
    wide, store_url, monkeypatch, tmp_path, fold
):
    _, summary = wide
    assert summary.metrics == sorted(WIDE_METRICS, key=lambda m: (m.startswith(("params.", "flops.")), m))
    texts = expected_texts(summary)
    assert len(texts) == 2 * 2 * 15 + 2 * 12  # every cell, and norms' deltas (none for params / FLOPs)
    if fold:  # past RICH_MAX_COLUMNS, the column axis moves into the rows: values all kept, and said
        monkeypatch.setattr(report_tables, "RICH_MAX_COLUMNS", 20)
    piped = invoke(store_url, monkeypatch, "abl", env={"COLUMNS": "80"})
    assert piped.exit_code == 0, piped.output
    monkeypatch.chdir(tmp_path)
    assert invoke(store_url, monkeypatch, "abl", "--out", "wide.txt").exit_code == 0
    for output in (piped.output, (tmp_path / "wide.txt").read_text()):
        missing = [t for t in texts if t not in output]
        assert not missing, f"{len(missing)} values cut, e.g. {missing[:3]}"
        titles = column_titles(output)
        for metric in WIDE_METRICS:  # once per column group, whole (broken after its dots)
            assert sum(t.endswith(f" {metric}") or t == metric for t in titles) == 1 + (not fold), metric
        assert sum("model.scale=small " in t for t in titles) == 15 * (not fold)
        assert sum("model.scale=base " in t for t in titles) == 15 * (not fold)
        notes = ["30 columns are too many for one table: model.scale shown as rows (see --cols)"] * fold
        prose = " ".join(line.strip() for line in output.splitlines() if not line.startswith(BOX))
        for line in _legend(summary, set()) + notes:  # the footnotes, whole (wrapped to the table)
            assert line in prose
        assert "…" not in output


BOX = ("┃", "┏", "┡", "│", "├", "└")


def column_titles(output: str) -> list[str]:
    """The column headers of a rich table, each header's lines joined (a name broken after a dot
    joined back whole; a column group's title and the metric separated by a space)."""
    rows = [line.split("┃")[1:-1] for line in output.splitlines() if line.startswith("┃")]
    titles = [" ".join(filter(None, (row[i].strip() for row in rows))) for i in range(len(rows[0]))]
    return [re.sub(r"\. (?=\S)", ".", t) for t in titles]


def test_a_terminal_too_narrow_gets_several_tables_and_is_told_so(wide):
    _, summary = wide
    buffer = io.StringIO()
    print_table(render_rich(summary), Console(file=buffer, force_terminal=True, width=80, color_system=None))
    output = buffer.getvalue()
    assert max(map(len, output.splitlines())) <= 80
    parts = int(re.search(r"split into (\d+) tables to fit this terminal's 80 columns", output).group(1))
    assert parts >= 8 and output.count("│ baseline ") == output.count("│ norms ") == parts  # labels repeated
    assert re.search(rf"abl \({parts}/{parts}\)", output)
    missing = [t for t in expected_texts(summary) if t not in output]
    assert not missing, missing[:3]


# ----------------------------------------------------------------------------- issue 14.8: directions

DIRECTED = (
    STUDY
    + """
report:
  directions: {{"*.score": min, "pretrain.loss": none}}
"""
)


def test_declared_directions_decide_best_and_an_unknown_direction_is_never_best(store_url, write_study):
    study = load_study(
        write_study(
            DIRECTED.format(
                name="abl",
                variants="\n".join(f"    {k}: {v}" for k, v in VARIANTS.items()),
                baseline="baseline",
            ),
            "abl.yaml",
        )
    )
    with Store(store_url) as store:
        store.plan(study)
        finish(
            store,
            study,
            {
                (v, s, seed): {
                    "x.score": 1.0 + (v == "norms"),
                    "pretrain.loss": 2.0 + (v == "norms"),
                    "pretrain.seconds": 100.0 + 10 * (v == "norms"),
                    "pretrain.steps": 10.0 + 5 * (v == "norms") + seed,
                }
                for v, s in MIOU
                for seed in range(3)
            },
        )
        summary = build(store, "abl")
    best = {(r["model.specialize"], r["metric"]) for r in summary.cells.to_dict("records") if r["best"]}
    assert {m for _, m in best} == {"x.score", "pretrain.seconds"}
    assert ("baseline", "x.score") in best and ("baseline", "pretrain.seconds") in best  # lower wins: min
    md = render(summary, Format.markdown)
    assert "**1.00**" in md and "**100**" in md and "**10.0" not in md and "**2.00**" not in md
    assert "+5.0 [+5.0, +5.0]" in md  # an unjudged metric keeps its (uncoloured) delta
    assert (
        "lower for pretrain.seconds, x.score; never bold (no known direction; see report.directions): "
        "pretrain.loss, pretrain.steps" in md
    )
    assert json.loads(render(summary, Format.json))["directions"] == {
        "pretrain.loss": 0,
        "pretrain.seconds": -1,
        "pretrain.steps": 0,
        "x.score": -1,
    }


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        (
            '{directions: {"*.loss": lower}}',
            "report.directions.*.loss: input should be 'min', 'max' or 'none', got 'lower'",
        ),
        (
            "{directons: {}}",
            "report.directons: unknown key (did you mean 'directions'?); expected one of: directions",
        ),
    ],
)
def test_a_bad_report_block_is_one_message_naming_the_key(write_study, block, problem):
    text = STUDY.format(name="abl", variants="    baseline: {}", baseline="baseline") + f"report: {block}\n"
    with pytest.raises(SpecError) as e:
        load_study(write_study(text, "abl.yaml"))
    assert str(e.value).endswith(f"abl.yaml: {problem}") and len(e.value.problems) == 1


# ----------------------------------------------------------------------------- issue 14.9: pooling

DEPTHS = """
study: depths
task: model.experiment:run
base:
  model: {scale: small, depth: 4, specialize: {}}
  train: {lr: 0.001}
axes:
  model.specialize: {baseline: {}, norms: {norm1: all}}
  model.depth: [4, 8]
  train.lr: [0.001, 0.01]
exclude:
  - {model.specialize: norms, model.depth: 8}
seeds: 2
baseline: baseline
"""


def test_an_axis_left_out_is_refused_or_pooled_when_asked_and_deltas_stay_paired(
    store_url, write_study, monkeypatch
):
    study = load_study(write_study(DEPTHS, "depths.yaml"))
    top1 = {
        ("baseline", 4, 0.001): [10, 12],
        ("baseline", 8, 0.001): [30, 32],
        ("baseline", 4, 0.01): [20, 22],
        ("baseline", 8, 0.01): [40, 42],
        ("norms", 4, 0.001): [13, 16],
        ("norms", 4, 0.01): [21, 25],
    }
    with Store(store_url) as store:
        store.plan(study)
        for c in study.cells:
            labels = (c.labels["model.specialize"], c.labels["model.depth"], c.labels["train.lr"])
            attempt = store.add_attempt(c.key, executor="debug", state=CellState.RUNNING)
            store.update_attempt(attempt, state=CellState.COMPLETED)
            store.add_metrics(c.key, "eval", {"x.top1": top1[labels][c.seed]})
        with pytest.raises(UserError, match=r"leave out model\.depth: .* --pool model\.depth"):
            build(store, "depths", cols=["train.lr"])
        summary = build(store, "depths", cols=["train.lr"], pool=["model.depth"])
    result = invoke(store_url, monkeypatch, "depths", "--cols", "train.lr")
    assert result.exit_code == 2 and "model.depth" in result.output and "Traceback" not in result.output
    norms = summary.cells.set_index(["model.specialize", "train.lr"]).loc[("norms", 0.001)]
    base = summary.cells.set_index(["model.specialize", "train.lr"]).loc[("baseline", 0.001)]
    assert base["mean"] == 21 and base["n"] == 4 and norms["mean"] == 14.5  # means pool the depths …
    assert norms["delta"] == 3.5 and norms["delta_n"] == 2  # … a delta pairs depth 4 with depth 4, by seed
    md = render(summary, Format.markdown)
    assert "mean ± std over seeds and model.depth pooled together (--pool model.depth)" in md
    assert "mean ± std over seeds;" not in md
    assert "each pair equal on every other axis and seed" in md
    assert (
        "the groups cover different model.depth labels: their pooled means do not compare like with like"
        in md
    )
    # Asked for: the same table from the command, legend included.
    piped = invoke(
        store_url, monkeypatch, "depths", "--cols", "train.lr", "--pool", "model.depth", "-f", "markdown"
    )
    assert piped.exit_code == 0 and piped.output == md


def test_an_axis_with_one_label_in_the_table_needs_no_pooling(full):
    store, study = full
    small = [c.key for c in study.cells if c.labels["model.scale"] == "small"]
    summary = build(store, "abl", cols=[], keys=small)
    assert summary.pooled == [] and set(summary.cells["n"]) == {3}


# ----------------------------------------------------------------------------- issue 14.11: LaTeX


@pytest.fixture
def partial(store_url, write_study):
    study = write(write_study, variants={"baseline": "{}", "norms_1%": "{norm1: all}"}, baseline="baseline")
    with Store(store_url) as store:
        store.plan(study)
        groups = [("baseline", "small"), ("norms_1%", "small"), ("baseline", "base")]
        values = {
            (v, s, seed): {"linear_seg.ade20k.miou": MIOU[v.split("_")[0], s][seed]}
            for v, s in groups
            for seed in range(3)
        }
        values |= {("norms_1%", "base", 0): {"linear_seg.ade20k.miou": 51.0}}
        finish(store, study, values, states={("norms_1%", "base", 1): CellState.FAILED})
        yield store, build(store, "abl")


def test_latex_says_what_the_markdown_says(partial):
    _, summary = partial
    tex, md = render(summary, Format.latex), render(summary, Format.markdown)
    assert r"\usepackage{booktabs}" in tex.splitlines()[0]
    assert r"\multicolumn{1}{c}{model.scale=small} & \multicolumn{1}{c}{model.scale=base}" in tex
    assert "(+2.0 [-0.5, +4.5])" in md and r"{\scriptsize $+2.0$ $[-0.5, +4.5]$}" in tex  # the interval kept
    assert r"norms\_1\%" in tex
    legend = tex[tex.index(r"\end{tabular}") :]
    assert r"$^{\dagger}$ some seeds failed, were interrupted or cancelled\par" in legend
    assert r"mean $\pm$ std over seeds; n/N when fewer seeds have the value" in legend
    assert r"95 \% paired-t interval (n \textgreater{}= 2)" in legend
    assert not [line for line in tex.splitlines()[1:] if line.startswith("%")]  # nothing said in comments
    assert len([line for line in md.splitlines() if line.startswith("- ")]) == legend.count(r"\par") - 1
    coverage = render_coverage(summary, Format.latex)
    assert r"model.specialize & model.scale=small & model.scale=base \\" in coverage
    assert r"norms\_1\% & 3/3 ok & 1/3 fail 1 new 1 \\" in coverage and "booktabs" in coverage.splitlines()[0]


@pytest.mark.parametrize("coverage", [False, True])
def test_latex_compiles_pasted_into_a_document(partial, tmp_path, coverage):
    if shutil.which("pdflatex") is None:  # .ci/run installs it
        (pytest.fail if IN_CI else pytest.skip)("no pdflatex (apt-get install texlive-latex-recommended)")
    _, summary = partial
    table = render_coverage(summary, Format.latex) if coverage else render(summary, Format.latex)
    (tmp_path / "t.tex").write_text(table)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\begin{table}\\centering\n\\input{t.tex}\n\\end{table}\n"
        "\\end{document}\n"
    )
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Missing character" not in (tmp_path / "doc.log").read_text()


# ----------------------------------------------------------------------------- issue 14.12: --json, --final


def test_cli_json_and_final_without_a_search(cli):
    as_json = cli("abl", "--json", "-m", "*.miou")
    assert as_json.exit_code == 0 and json.loads(as_json.output)["metrics"] == ["linear_seg.ade20k.miou"]
    assert as_json.output == cli("abl", "--format", "json", "-m", "*.miou").output
    both = cli("abl", "--json", "--format", "csv")
    assert both.exit_code == 2 and "--json and --format csv" in both.output
    final = cli("abl", "--final")
    assert final.exit_code == 2 and "--final: study 'abl' has no search block" in final.output
    assert "Traceback" not in final.output


def test_api_load_never_creates_a_store(tmp_path):
    with pytest.raises(UserError, match="no results store at"):
        api_load("abl", db=f"sqlite:///{tmp_path / 'typo.db'}")
    assert list(tmp_path.iterdir()) == []


def test_the_quickstarts_table_fits_80_columns_in_a_pipe(store_url, write_study, monkeypatch):
    """Issue 18 §4: the quickstart's report (2 variants × 3 seeds, the three metrics
    scripts/quickstart.sh asks for, deltas with wide intervals) fits an 80-column terminal and a
    pipe: metric names break after their dots, the footnotes wrap, no value is cut."""
    variants = "    baseline: {}\n    norms+qkv_third: {qkv: first_third}"
    text = STUDY.format(name="quick", variants=variants, baseline="baseline")
    study = load_study(write_study(text.replace("  model.scale: [small, base]\n", ""), "quick.yaml"))
    knn = {"baseline": [80.0, 35.0, 76.0], "norms+qkv_third": [20.0, 95.0, 56.0]}  # deltas -60, +60, -20
    with Store(store_url) as store:
        store.plan(study)
        for cell in study.cells:
            variant = cell.labels["model.specialize"]
            attempt = store.add_attempt(cell.key, executor="debug", state=CellState.RUNNING)
            store.update_attempt(attempt, state=CellState.COMPLETED)
            metrics = {
                "knn.procedural.top1": knn[variant][cell.seed],
                "linear_seg.procedural.miou": 34.25 + cell.seed + (variant != "baseline") * 0.5 * cell.seed,
                "params.extra_pct": 6.09 * (variant != "baseline"),
            }
            store.add_metrics(cell.key, "eval", metrics)
    wanted = ["-m", "knn.*.top1", "-m", "linear_seg.*.miou", "-m", "params.extra_pct"]
    piped = invoke(store_url, monkeypatch, "quick", *wanted, env={"COLUMNS": "80"})
    assert piped.exit_code == 0, piped.output
    assert max(map(len, piped.output.splitlines())) <= 80, piped.output
    assert "-6.7 [-158.4, +145.1]" in piped.output and "63.7 ± 24.9" in piped.output
    assert "+6.09 %" in piped.output and "split into" not in piped.output
    assert column_titles(piped.output) == [
        "model.specialize",
        "knn.procedural.top1",
        "linear_seg.procedural.miou",
        "params.extra_pct",
    ]
