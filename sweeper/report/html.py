"""`sweeper report --format html`: one self-contained page that holds a study — the ablation
table, a forest plot of the paired deltas, training curves with seed bands, per-block analysis
plots, coverage while incomplete, a search's trials, the study file and the code version.

Nothing is fetched when the page opens (inline CSS, figures as inline SVG), so it can be mailed,
archived beside the paper or opened on a laptop without network. Its numbers are the markdown
report's: the table is built from the same `Summary` and `_entries` (tests parse both back).
"""

from __future__ import annotations

import html
import io
import math
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sweeper.errors import UserError
from sweeper.report.load import load
from sweeper.report.statistics import Summary
from sweeper.report.tables import (
    _col_title,
    _columns,
    _entries,
    _legend,
    _row_keys,
    complete,
    coverage_entries,
)
from sweeper.store import Store
from sweeper.study import Study

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sweeper.search import GroupResult

WATCH_S = 30  # --watch: seconds between rewrites (and the page's own reload)
MAX_CURVES = 4  # reported metrics drawn as curves (losses first)
MIN_STEPS = 3  # a metric reported at fewer steps is no curve
MAX_FAMILIES = 6  # per-block analysis families drawn
MAX_TRIALS = 300  # trial rows listed (the search summary covers every group)
VARIANT = "variant"

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #ffffff; --soft: #f6f8fa;
        --up: #1a7f37; --down: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif;
       color: var(--fg); background: var(--bg); }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header .meta { color: #c9d1d9; font-size: 12.5px; margin-top: 4px; }
nav { position: sticky; top: 0; background: var(--soft); border-bottom: 1px solid var(--line);
      padding: 6px 32px; font-size: 13px; z-index: 1; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; }
main { padding: 8px 32px 40px; max-width: 1400px; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 5px 10px; vertical-align: top; }
th { background: var(--soft); font-weight: 600; text-align: center; }
th.label, td.label { text-align: left; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.best .v, td.best .sd { font-weight: 700; }
td.best { background: #fff8c5; }
.d, .n { display: block; font-size: 12px; color: var(--muted); }
td.up .d { color: var(--up); } td.down .d { color: var(--down); }
sup { color: var(--down); }
ul.legend { color: var(--muted); font-size: 12.5px; padding-left: 18px; }
.grid { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
figure { margin: 12px 0; flex: 0 1 calc(50% - 12px); min-width: 480px; }
figure svg { width: 100%; height: auto; }
.grid figure:only-child { flex-basis: 100%; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 12px; overflow-x: auto;
      font-size: 12.5px; }
.complete { color: var(--up); } .pending { color: #9a6700; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def code_version(study_file: str) -> str:
    """sweeper's version and the git commit of the study file's repository (when it is in one)."""
    try:
        mine = f"sweeper {version('sweeper')}"
    except PackageNotFoundError:
        mine = "sweeper (not installed)"
    where = Path(study_file).resolve().parent if study_file else Path.cwd()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = " (uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
        return f"{mine}; git {commit[:12]}{dirty}"
    except (OSError, subprocess.SubprocessError):
        return f"{mine}; no git commit (the study file is not in a git repository)"


def svg(fig: Figure) -> str:
    """The figure as inline SVG (its text as paths: no font is needed by the reader)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


# ----------------------------------------------------------------------------- tables


def ablation_table(summary: Summary) -> str:
    """The markdown report's table as HTML: the same entries, best marked, deltas coloured by verdict."""
    entries, columns, rows = _entries(summary), _columns(summary), _row_keys(summary)
    used: set[str] = set()
    head = "".join(f'<th class="label">{_e(a)}</th>' for a in summary.rows)
    head += "".join(f"<th>{_e(_col_title(summary, c, ' · '))}</th>" for c in columns)
    body = []
    for r in rows:
        cells = [f'<td class="label">{_e(v)}</td>' for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append('<td class="num">–</td>')
                continue
            classes = ["num", *(["best"] if e.best else []), {1: "up", -1: "down"}.get(e.verdict, "")]
            text = f'<span class="v">{_e(e.value)}</span>'
            text += f'<span class="sd"> ± {_e(e.spread)}</span>' if e.spread else ""
            if e.delta:
                text += f' <span class="d">({_e(e.delta)}{" " + _e(e.interval) if e.interval else ""})</span>'
            text += f' <span class="n">n={_e(e.n)}</span>' if e.n else ""
            text += f"<sup>{_e(e.flags)}</sup>" if e.flags else ""
            used.update(e.flags)
            cells.append(f'<td class="{" ".join(c for c in classes if c)}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = "".join(f"<li>{_e(line)}</li>" for line in _legend(summary, used))
    return (
        f'<div class="scroll"><table id="ablation"><thead><tr>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div><ul class="legend">{legend}'
        "<li>best per column highlighted; deltas green / red where the interval clears 0 in the "
        "better / worse direction</li></ul>"
    )


def coverage_table(summary: Summary) -> str:
    rows, groups, text = coverage_entries(summary)
    titles = [", ".join(f"{a}={v}" for a, v in zip(summary.cols, g, strict=True)) or "cells" for g in groups]
    head = "".join(f'<th class="label">{_e(a)}</th>' for a in summary.rows) + "".join(
        f"<th>{_e(t)}</th>" for t in titles
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="label">{_e(v)}</td>' for v in r)
        + "".join(f'<td class="num">{_e(text.get((*r, *g), "–"))}</td>' for g in groups)
        + "</tr>"
        for r in rows
    )
    return (
        f'<div class="scroll"><table id="coverage"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        '</table></div><ul class="legend"><li>done/cells; ✓ complete, ⟳ running, ✗ failed, · not run yet'
        "</li></ul>"
    )


def frame_table(frame: pd.DataFrame, table_id: str, left: set[str]) -> str:
    def cell(c: str, v: object) -> str:
        if isinstance(v, float):
            v = "–" if math.isnan(v) else f"{v:.4g}"
        return f'<td class="{"label" if c in left else "num"}">{_e(v)}</td>'

    head = "".join(f'<th class="{"label" if c in left else ""}">{_e(c)}</th>' for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(frame.columns, row, strict=True)) + "</tr>"
        for row in frame.itertuples(index=False, name=None)
    )
    return (
        f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        "</table></div>"
    )


# ----------------------------------------------------------------------------- figures


def forest_figure(summary: Summary) -> Figure | None:
    """Per metric, each variant's paired delta against the baseline with its 95 % interval."""
    from matplotlib.figure import Figure

    cells = summary.cells[summary.cells["delta_n"] > 0]
    # The scores: a metric with a direction (not a size, a step count or a time without one).
    metrics = [m for m in summary.metrics if m in set(cells["metric"]) and summary.direction(m) != 0]
    if cells.empty or not metrics:
        return None
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    per = max(len(cells[cells["metric"] == m]) for m in metrics)
    fig = Figure(figsize=(4.6 * ncols + 1.0, nrows * (1.4 + 0.4 * per) + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).reshape(-1)
    for ax, metric in zip(axes, metrics, strict=False):
        part = cells[cells["metric"] == metric]
        labels = [" · ".join(map(str, r)) for r in part[summary.groups].itertuples(index=False, name=None)]
        y = np.arange(len(part))[::-1]
        delta, lo, hi = part["delta"].to_numpy(), part["ci_low"].to_numpy(), part["ci_high"].to_numpy()
        sign = summary.direction(metric)
        verdict = np.where(lo > 0, sign, np.where(hi < 0, -sign, 0))  # as the table colours its deltas
        judged = np.select([verdict > 0, verdict < 0], ["#1a7f37", "#cf222e"], "#0969da")
        colour = np.where(np.isnan(lo), "#6e7781", judged)
        err = np.vstack([delta - lo, hi - delta])
        for i in range(len(part)):
            ax.errorbar(
                delta[i],
                y[i],
                xerr=None if np.isnan(lo[i]) else err[:, i : i + 1],
                fmt="o",
                color=colour[i],
                capsize=3,
                markersize=4,
            )
        ax.axvline(0, color="#57606a", linewidth=0.8, linestyle="--")
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_ylim(-0.6, len(part) - 0.4)
        ax.set_title(metric, fontsize="medium")
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    base = ", ".join(f"{k}={v}" for k, v in (summary.baseline or {}).items())
    fig.suptitle(f"paired delta vs {base}: mean over seed pairs, 95 % t interval", fontsize="medium")
    return fig


def _scope(summary: Summary | None, keys: list[str] | None) -> list[str] | None:
    """The axes a search's final-seed view has (its groups'); None for a plain study (every axis)."""
    if summary is None or keys is None:
        return None
    return [a for a in summary.rows + summary.cols + summary.pooled if a != "study"]


def _variant(frame: pd.DataFrame, axes: list[str]) -> pd.Series:
    return frame[axes].astype(str).agg(" · ".join, axis=1) if axes else pd.Series("all", index=frame.index)


def curve_figures(store: Store, name: str, summary: Summary | None, keys: list[str] | None) -> list[Figure]:
    """The reported metrics (losses first) as curves, a line per variant (every non-seed axis but the
    panel's), a band over seeds; panels by the table's first column axis."""
    from sweeper.report.curves import aligned, band, load_curves, step_counts
    from sweeper.report.options import ErrorBar
    from sweeper.report.plot import curve_figure

    # Curves, not points: a metric reported at a few steps only (a final value) is left out, and
    # only the metrics drawn are read (a large study holds millions of reported values).
    names = sorted(
        (m for m, n in step_counts(store, name).items() if n >= MIN_STEPS and not m.startswith("analysis.")),
        key=lambda m: ("loss" not in m, m),
    )
    names = names[:MAX_CURVES]
    if not names:
        return []
    frame, axes = load_curves(store, name, names)
    axes = _scope(summary, keys) or axes
    if keys is not None:
        frame = frame[frame["key"].isin(set(keys))]
    col = summary.cols[0] if summary and summary.cols and summary.cols[0] in axes else None
    frame = frame.assign(**{VARIANT: _variant(frame, [a for a in axes if a != col and a in frame])})
    figs = []
    for metric in names:
        part = frame[frame["metric"] == metric]
        data = aligned(part, [c for c in (col, VARIANT) if c])
        data = data.assign(err=band(data, ci=False))
        figs.append(curve_figure(data, metric, VARIANT, col, ErrorBar.std, title=metric))
    return figs


def block_figures(store: Store, name: str, summary: Summary | None, keys: list[str] | None) -> list[Figure]:
    """Each analysis.*.block<N>.* family against the block index, a line per variant, bars over seeds."""
    from sweeper.report.options import ErrorBar
    from sweeper.report.plot import BLOCK, BLOCK_AXIS, figure, plot_data, y_label

    try:
        loaded = load(store, name, ["analysis.*"], keys=keys, axes=_scope(summary, keys))
    except UserError:  # no analysis metric recorded
        return []
    families: dict[str, list[str]] = {}
    for m in loaded.metrics:
        if BLOCK.search(m):
            families.setdefault(BLOCK.sub("block*", m), []).append(m)
    col = summary.cols[0] if summary and summary.cols and summary.cols[0] in loaded.axes else None
    others = [a for a in loaded.axes if a != col]
    frame = loaded.frame.assign(**{VARIANT: _variant(loaded.frame, others)})
    figs = []
    for metrics in list(families.values())[:MAX_FAMILIES]:
        one = replace(loaded, frame=frame, axes=[*loaded.axes, VARIANT], metrics=metrics)
        data = plot_data(one, BLOCK_AXIS, VARIANT, col, ErrorBar.std)
        if not data.empty:  # the family's whole name as the title, its last segment on the y axis
            family = y_label(metrics, BLOCK_AXIS)
            fig = figure(data, BLOCK_AXIS, family.rsplit(".", 1)[-1], VARIANT, col, ErrorBar.std)
            fig.suptitle(f"{family}\n{fig.get_suptitle()}", fontsize="small")
            figs.append(fig)
    return figs


def trials_figure(study: Study, store: Store) -> Figure | None:
    from sweeper.report.plot import trial_points
    from sweeper.report.plot import trials_figure as draw
    from sweeper.search import trials

    plan = study.search_plan
    params = list(plan.params)
    if not params:
        return None
    hue = plan.group_axes[0] if plan.group_axes else None
    try:
        points = trial_points(study, pd.DataFrame(trials(store, study)), params[0], plan.spec.metric, hue)
    except UserError:  # no completed trial yet
        return None
    return draw(study, points, params[0], plan.spec.metric, hue)


# ----------------------------------------------------------------------------- the page


def _section(anchor: str, title: str, body: str, parts: list[tuple[str, str, str]]) -> None:
    parts.append((anchor, title, f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'))


def _figures(figs: list[Figure]) -> str:
    return '<div class="grid">' + "".join(f"<figure>{svg(f)}</figure>" for f in figs) + "</div>"


def page(
    store: Store,
    name: str,
    summary: Summary | None,
    searched: Study | None,
    groups: list[GroupResult] | None,
    keys: list[str] | None,
    refresh: int | None = None,
) -> str:
    """The whole HTML document; with `refresh`, it reloads itself every that many seconds (--watch)."""
    from sweeper.report import search as search_report
    from sweeper.search import trials as search_trials

    row = store.study_row(name)
    parts: list[tuple[str, str, str]] = []
    if searched is not None and groups is not None:
        plan = searched.search_plan
        frame = search_report.frame(searched, groups)
        lines = [search_report._cells(searched, r) for _, r in frame.iterrows()]
        body = frame_table(pd.DataFrame(lines), "search", set(plan.group_axes))
        fig = trials_figure(searched, store)
        trials = pd.DataFrame(search_trials(store, searched)).drop(columns="key", errors="ignore")
        more = f"<p>first {MAX_TRIALS} of {len(trials)} trials</p>" if len(trials) > MAX_TRIALS else ""
        body += (
            _figures([fig] if fig else [])
            + more
            + frame_table(trials.head(MAX_TRIALS), "trials", {*plan.group_axes, "kind", "state"})
        )
        _section("search", f"search: {plan.spec.direction} {plan.spec.metric}", body, parts)
    if summary is not None:
        if not complete(summary):
            _section("coverage", "coverage (the study is not complete)", coverage_table(summary), parts)
        _section("table", "ablation table", ablation_table(summary), parts)
        forest = forest_figure(summary)
        if forest is not None:
            _section("forest", "deltas against the baseline", _figures([forest]), parts)
    curves = curve_figures(store, name, summary, keys)
    if curves:
        _section("curves", "training curves", _figures(curves), parts)
    blocks = block_figures(store, name, summary, keys)
    if blocks:
        _section("blocks", "per-block analysis", _figures(blocks), parts)
    _section("study", "study file", f"<p>{_e(row.file)}</p><pre>{_e(row.spec_text)}</pre>", parts)
    nav = "".join(f'<a href="#{a}">{_e(t.split(" (")[0])}</a>' for a, t, _ in parts)
    state = (
        ""
        if summary is None
        else '<span class="complete">complete</span>'
        if complete(summary)
        else '<span class="pending">in progress</span>'
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{state}{' · ' if state else ''}generated {when} · {_e(code_version(row.file))}"
    reload = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(name)} — sweeper report'
        '</title><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{reload}<style>{CSS}</style>"
        f'</head><body><header><h1>{_e(name)}</h1><div class="meta" id="version">{meta}</div></header>'
        f"<nav>{nav}</nav><main>{''.join(p for _, _, p in parts)}</main></body></html>\n"
    )


def render(
    store: Store,
    name: str,
    rows: Sequence[str] | None,
    cols: Sequence[str] | None,
    metrics: Sequence[str] | None,
    pool: Sequence[str],
    refresh: int | None = None,
) -> str:
    """The page as `sweeper report` scopes it: a search's trials, then its final seeds' table."""
    from sweeper.report.scope import final_scope, search_study
    from sweeper.report.statistics import build
    from sweeper.search import results

    searched = search_study(store, name)
    keys = axes = directions = groups = None
    if searched is not None:
        groups = results(store, searched)
        keys, axes, directions = final_scope(store, searched, groups, required=False)
    summary = None
    if keys is None or keys:
        summary = build(
            store, name, rows, cols, metrics, keys=keys, axes=axes, directions=directions, pool=pool
        )
    return page(store, name, summary, searched, groups, keys, refresh)
