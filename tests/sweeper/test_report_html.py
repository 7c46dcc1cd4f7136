"""`sweeper report --format html`: the page's numbers are the markdown report's, it holds every
section and fetches nothing, and headless Chromium renders it (a screenshot that is the page)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sweeper.cli.common import Options
from sweeper.cli.report import report_command
from sweeper.report.html import page
from sweeper.report.statistics import build
from sweeper.report.tables import render_markdown
from sweeper.store import CellState, Store
from tests.conftest import IN_CI
from tests.sweeper.test_report import MIOU, RMSE, write

BLOCK = "analysis.procedural.block{}.cos_cls_patch_pre_norm1"


@pytest.fixture
def store(store_url, write_study):
    """The abl study with final metrics, per-block analysis and loss curves; one cell still running."""
    study = write(write_study)
    with Store(store_url) as store:
        store.plan(study)
        for c in study.cells:
            v, s, seed = c.labels["model.specialize"], c.labels["model.scale"], c.seed
            running = (v, s, seed) == ("norms", "base", 2)
            state = CellState.RUNNING if running else CellState.COMPLETED
            store.add_attempt(c.key, executor="debug", state=state)
            if not running:
                store.add_metrics(
                    c.key,
                    "eval",
                    {
                        "linear_seg.ade20k.miou": MIOU[v, s][seed],
                        "linear_depth.nyu.rmse": RMSE[v, s][seed],
                        **{BLOCK.format(b): 0.1 * b + 0.01 * seed for b in range(4)},
                    },
                )
            store.add_metric_rows(
                [
                    {
                        "cell_key": c.key,
                        "attempt": 1,
                        "stage": "report",
                        "name": "pretrain.loss",
                        "step": t,
                        "value": 2 * math.exp(-t / 50) + 0.1 * seed,
                    }
                    for t in range(0, 200, 10)
                ]
                + [
                    {
                        "cell_key": c.key,
                        "attempt": 1,
                        "stage": "report",
                        "name": "acc",
                        "step": 200,
                        "value": 0.5,
                    }
                ]
            )  # a final value, reported once: no curve
        yield store


class Tables(HTMLParser):
    """The text of each table's cells, by table id: [[row cells…]…], header row first."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: list[list[str]] | None = None
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.current = self.tables.setdefault(dict(attrs).get("id", ""), [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None and self.current is not None:
            self.current[-1].append("".join(self.cell))
            self.cell = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def markdown_cells(md: str) -> list[list[str]]:
    """The pipe table's cells as text (no bold, no escapes), header first, the rule row dropped."""
    lines = [line for line in md.splitlines() if line.startswith("|") and not line.startswith("|:")]
    return [
        [
            c.strip().replace("**", "").replace("\\*", "*").replace("\\|", "|")
            for c in re.split(r"(?<!\\)\|", line)[1:-1]
        ]
        for line in lines
    ]


def test_the_html_table_holds_the_markdown_reports_numbers(store):
    summary = build(store, "abl")
    parser = Tables()
    parser.feed(page(store, "abl", summary, None, None, None))
    assert parser.tables["ablation"] == markdown_cells(render_markdown(summary))
    assert ["norms", "3/3 ✓", "2/3 ⟳1"] in parser.tables["coverage"]  # incomplete: coverage is shown
    assert any("n=2/3" in c for row in parser.tables["ablation"] for c in row)  # the running cell's column


def test_the_page_holds_every_section_and_fetches_nothing(store):
    html = page(store, "abl", build(store, "abl"), None, None, None)
    for anchor in ("coverage", "table", "forest", "curves", "blocks", "study"):
        assert f'<section id="{anchor}">' in html
    assert html.count("<svg") == 3  # the forest plot, the loss curves (not acc's one point), one block family
    assert "band: ± std over seeds" in html  # the curves' legend (SVG text comes with its string)
    assert "model.specialize:" in html and "sweeper 0." in html  # the study file and the code version
    assert not re.search(r"<(script|link|img|iframe)\b|\bsrc=|url\((?!#)|@import", html)  # fetch nothing
    assert re.search(r'<td class="num best[^"]*"><span class="v">52.0', html)  # the best is marked


def test_report_command_writes_html_by_extension_and_rejects_views_it_has_no_place_for(
    store, monkeypatch, tmp_path
):
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)
    monkeypatch.setattr(Options, "db", store.url)
    runner = CliRunner()
    result = runner.invoke(app, ["report", "abl", "--out", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["report", "abl", "--format", "html", "--coverage"])
    assert result.exit_code == 2 and "--format html is the whole study on one page" in result.stderr


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        if IN_CI:
            pytest.fail("CI must render the HTML report in a browser: chromium is missing (see .ci/run)")
        pytest.skip("no chromium (apt-get install chromium) to render the HTML report")
    return found


def test_headless_chromium_renders_the_page(store, tmp_path):
    chromium = _chromium()
    report = tmp_path / "report.html"
    report.write_text(page(store, "abl", build(store, "abl"), None, None, None))
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, "--window-size=1280,1600", f"--screenshot={shot}", report.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*flags, "--dump-dom", report.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert '<table id="ablation">' in dom and "<svg" in dom
    assert "41.0 ± 1.0" in re.sub(r"<[^>]+>", "", dom)  # a cell of the table, as the browser parsed it
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 20  # not a blank page: dark header, text, tables and figures
    header, body = pixels[:40].mean(), pixels[200:].mean()
    assert header < 100 < body  # the dark header band above a light page: the page itself, styled


def test_a_search_page_lists_its_groups_and_trials_then_the_final_seed_table(env):
    from sweeper.launch import launch
    from sweeper.report.scope import final_scope
    from sweeper.search import results
    from tests.sweeper.test_search import write as write_search

    study = write_search(
        env / "rep.yaml",
        "bowl",
        {"x": 0.0, "y": 0.0, "lr": 0.1},
        """\
        metric: f
        direction: minimize
        trials: 4
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
        keys, axes, directions = final_scope(store, study, groups, required=True)
        summary = build(store, "rep", keys=keys, axes=axes, directions=directions)
        html = page(store, "rep", summary, study, groups, keys)
    parser = Tables()
    parser.feed(html)
    assert [r[0] for r in parser.tables["search"][1:]] == ["near", "far"]
    assert len(parser.tables["trials"]) == 1 + 2 * (4 + 2)  # header, per group 4 trials and 2 final seeds
    assert parser.tables["ablation"] == markdown_cells(render_markdown(summary))
    assert '<section id="search">' in html and html.count("<svg") == 2  # trials landscape, forest plot


def test_watch_rewrites_the_page_while_cells_run_then_stops(env, monkeypatch):
    from sweeper.launch import launch
    from sweeper.report import html as report_html
    from tests.sweeper.orchestration import write as write_plain

    study = write_plain(
        env / "w.yaml",
        "steps",
        {"steps": 30, "dt": 0.1},
        "dt: [0.1, 0.11]",
        executor="{kind: local, parallelism: 2}",
    )
    with Store() as store:
        launch(store, study)
    monkeypatch.setattr(report_html, "WATCH_S", 1)
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["report", "w", "--watch", "--out", "w.html"])
    assert result.exit_code == 0, result.output
    assert "rewritten every 1 s while cells run" in result.output  # at least one rewrite while running
    final = (env / "w.html").read_text()
    assert 'http-equiv="refresh"' not in final and '<span class="complete">complete<' in final
    assert '<table id="ablation">' in final
    assert "training curves" in final  # the steps task reports its loss
    result = CliRunner().invoke(app, ["report", "w", "--watch", "--format", "markdown"])
    assert result.exit_code == 2 and "--watch rewrites an HTML page" in result.stderr
