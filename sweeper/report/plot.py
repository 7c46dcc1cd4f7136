"""`sweeper plot`: a metric against an axis (or against the block index) per hue, mean over
seeds with error bars, or against the training step (a curve with a band over seeds), written
as PNG / PDF / SVG through matplotlib.

Figures are built on `matplotlib.figure.Figure` (the Agg / PDF canvases), never pyplot, so
no GUI backend or global state is involved: it works on a login node without a display.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweeper.errors import UserError, did_you_mean
from sweeper.report.load import Loaded, load
from sweeper.report.options import ErrorBar
from sweeper.report.scope import final_scope, search_study
from sweeper.report.statistics import t_quantile
from sweeper.report.tables import dotted_lines
from sweeper.search import trials
from sweeper.store import Store
from sweeper.study import SEED_AXIS, Study, study_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BLOCK_AXIS = "block"
STEP = "step"  # the x of a training curve (values reported per step)
BLOCK = re.compile(r"(?<![^.])block(\d+)(?![^.])")  # a whole name segment: analysis.x.block3.cos…
Y_LABEL_WIDTH = 32  # characters a y label fits along a panel's height; a longer name breaks after dots


def _long(loaded: Loaded, x: str, series: list[str], facet: str | None) -> pd.DataFrame:
    """One row per (member, metric) value: facet, series axes, x, value (NaN values dropped)."""
    frame = loaded.frame
    long = frame.melt(
        id_vars=[*loaded.axes, SEED_AXIS], value_vars=loaded.metrics, var_name="metric", value_name="value"
    )
    long = long[long["value"].notna()]
    if x == BLOCK_AXIS:
        blocks = long["metric"].str.extract(BLOCK, expand=False)
        long = long.assign(
            block=blocks.astype(int), family=long["metric"].str.replace(BLOCK, "block*", regex=True)
        )
    return long[[*(c for c in (facet,) if c), *series, x, "value"]]


def plot_data(
    loaded: Loaded, x: str, hue: str | None = None, col: str | None = None, error: ErrorBar = ErrorBar.std
) -> pd.DataFrame:
    """Mean over seeds per (col, hue, x) with its error half-width (std, or the 95 % t interval).

    With x = 'block', the metrics are per-block ones (name segment `block<N>`); when they form
    several families (e.g. pre_norm1 and pre_norm2), each family is its own series.
    """
    axes = loaded.axes
    for option, name in (("--x", x), ("--hue", hue), ("--col", col)):
        if name is not None and name not in axes and not (option == "--x" and name == BLOCK_AXIS):
            known = axes + ([BLOCK_AXIS] if option == "--x" else [])
            raise UserError(
                f"{option} {name}: not an axis of this study{did_you_mean(name, known)}; "
                f"choose from: {', '.join(known)}"
            )
    series = [hue] if hue else []
    if x == BLOCK_AXIS:
        unblocked = [m for m in loaded.metrics if not BLOCK.search(m)]
        if unblocked:
            raise UserError(
                f"--x block: these metrics have no block<N> name segment: {', '.join(unblocked[:5])}"
            )
        if len({BLOCK.sub("block*", m) for m in loaded.metrics}) > 1:
            series.append("family")
    elif len(loaded.metrics) != 1:
        raise UserError(
            f"--y matches {len(loaded.metrics)} metrics ({', '.join(loaded.metrics[:6])}"
            f"{', …' if len(loaded.metrics) > 6 else ''}); against an axis, plot one metric"
        )
    keys = [*(c for c in (col,) if c), *series, x]
    g = _long(loaded, x, series, col).groupby(keys, sort=False)["value"]
    data = pd.concat({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}, axis=1).reset_index()
    if error == ErrorBar.ci:
        data["err"] = t_quantile(data["n"].to_numpy()) * data["std"] / np.sqrt(data["n"])
    else:
        data["err"] = data["std"]
    data["err"] = data["err"].fillna(0.0)  # a single seed: a point without a bar
    return data


def _numeric(values: Sequence[Any]) -> bool:
    return all(
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in values
    )


def y_label(metrics: Sequence[str], x: str) -> str:
    """The metric's name; per block, its family with `block<N>`, or what several families share."""
    if x != BLOCK_AXIS:
        return metrics[0]
    families = list(dict.fromkeys(BLOCK.sub("block<N>", m) for m in metrics))
    return families[0] if len(families) == 1 else _families(families)[0]


def _families(families: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The dotted name segments several families share, `…` where they differ (a y label), and
    each family's own segments (its legend label); the whole names where one is all shared."""
    parts = [f.split(".") for f in families]
    lead = len(os.path.commonprefix(parts))
    trail = len(os.path.commonprefix([p[lead:][::-1] for p in parts]))
    own = {f: ".".join(p[lead : len(p) - trail]) for f, p in zip(families, parts, strict=True)}
    if not all(own.values()):
        return "value", {f: f for f in families}
    return ".".join([*parts[0][:lead], "…", *parts[0][len(parts[0]) - trail :]]), own


def _bars(data: pd.DataFrame, error: ErrorBar) -> str:
    """What the title says of the error bars: only bars that are drawn (a single seed has none)."""
    bars = "95 % t interval" if error == ErrorBar.ci else "std"
    if (data["n"] < 2).all():
        return "one seed per point, no error bars"
    if (data["n"] < 2).any():
        return f"mean over seeds, bars: {bars} (none on points of one seed)"
    return f"mean over seeds, bars: {bars}"


def figure(
    data: pd.DataFrame, x: str, y: str, hue: str | None, col: str | None, error: ErrorBar, title: str = ""
) -> Figure:
    """One panel per `col` label, one line per series, error bars; `y` is the y axis label.

    A series keeps its colour and sideways shift (a few percent of the x spacing, so that bars
    do not overlap) in every panel, and the one legend lists the series of all panels.
    matplotlib is imported here, on first use, to keep it out of every `sweeper` command's startup.
    """
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = [c for c in (hue, "family" if "family" in data else None) if c]
    if "family" in data:
        data = data.assign(family=data["family"].map(_families(list(dict.fromkeys(data["family"])))[1]))
    facets = list(dict.fromkeys(data[col])) if col else [None]
    xs = list(dict.fromkeys(data[x]))
    numeric = _numeric(xs)
    position = {v: (float(v) if numeric else float(i)) for i, v in enumerate(xs)}
    spacing = float(np.diff(sorted(position.values())).min()) if len(xs) > 1 else 1.0
    names = [", ".join(map(str, name)) for name, _ in data.groupby(series, sort=False)] if series else [""]
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    handles: dict[str, Any] = {}
    fig = Figure(figsize=(4.2 * len(facets) + (2.5 if series else 1.0), 3.6), layout="constrained")
    panels = fig.subplots(1, len(facets), sharey=True, squeeze=False)[0]
    for ax, facet in zip(panels, facets, strict=True):
        part = data if facet is None else data[data[col] == facet]
        for name, line in part.groupby(series, sort=False) if series else [((), part)]:
            label = ", ".join(map(str, name))
            i = names.index(label)
            shift = (i - (len(names) - 1) / 2) * 0.04 * spacing
            handles[label] = ax.errorbar(
                [position[v] + shift for v in line[x]],
                line["mean"],
                yerr=line["err"].where(line["n"] > 1),  # one seed: no bar, no cap
                color=colours[i % len(colours)],
                marker="o",
                markersize=4,
                capsize=3,
            )
        if not numeric:
            ax.set_xticks(
                range(len(xs)),
                [str(v) for v in xs],
                rotation=30 if len(xs) > 4 else 0,
                ha="right" if len(xs) > 4 else "center",
            )
        elif all(float(v).is_integer() for v in xs):  # blocks, depths: no tick between two of them
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if facet is not None:
            ax.set_title(f"{col} = {facet}")
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel(dotted_lines(y, Y_LABEL_WIDTH))
    fig.suptitle(f"{title}{': ' if title else ''}{_bars(data, error)}", fontsize="medium")
    if series:
        shown = [n for n in names if n in handles]
        fig.legend(
            [handles[n] for n in shown],
            shown,
            title=" / ".join(series),
            fontsize="small",
            loc="outside right upper",
        )
    return fig


def curve_data(
    store: Store,
    study: str,
    y: str,
    hue: str | None = None,
    col: str | None = None,
    error: ErrorBar = ErrorBar.std,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean over seeds per (col, hue, metric when --y matches several, step) with its band half-width."""
    from sweeper.report.curves import aligned, band, load_curves

    frame, axes = load_curves(store, study, [y])
    for option, name in (("--hue", hue), ("--col", col)):
        if name is not None and name not in axes:
            raise UserError(
                f"{option} {name}: not an axis of this study{did_you_mean(name, axes)}; "
                f"choose from: {', '.join(axes)}"
            )
    if keys is not None:
        frame = frame[frame["key"].isin(set(keys))]
    series = [c for c in (col, hue) if c] + (["metric"] if frame["metric"].nunique() > 1 else [])
    data = aligned(frame, series)
    if data.empty:
        raise UserError(f"no values of {y} reported yet for study '{study}'")
    return data.assign(err=band(data, error == ErrorBar.ci))


def curve_figure(
    data: pd.DataFrame, y: str, hue: str | None, col: str | None, error: ErrorBar, title: str = ""
) -> Figure:
    """One panel per `col` label, a line per hue (and metric) with a shaded band; the legend says
    what the band is. A series keeps its colour in every panel."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    series = [c for c in (hue, "metric" if "metric" in data else None) if c]
    facets = list(dict.fromkeys(data[col])) if col else [None]
    names = [", ".join(map(str, n)) for n, _ in data.groupby(series, sort=False)] if series else [y]
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    seeds = int(data["n"].max())
    what = "95 % t interval of the mean" if error == ErrorBar.ci else "± std over seeds"
    fig = Figure(figsize=(4.6 * len(facets) + 2.8, 3.6), layout="constrained")
    panels = fig.subplots(1, len(facets), sharey=True, squeeze=False)[0]
    handles: dict[str, Any] = {}
    for ax, facet in zip(panels, facets, strict=True):
        part = data if facet is None else data[data[col] == facet]
        for name, line in part.groupby(series, sort=False) if series else [((y,), part)]:
            label = ", ".join(map(str, name if isinstance(name, tuple) else (name,)))
            colour = colours[names.index(label) % len(colours)]
            steps, mean, err = line["step"].to_numpy(), line["mean"].to_numpy(), line["err"].to_numpy()
            (handles[label],) = ax.plot(steps, mean, color=colour, linewidth=1.4)
            if seeds > 1:
                ax.fill_between(steps, mean - err, mean + err, color=colour, alpha=0.2, linewidth=0)
        if facet is not None:
            ax.set_title(f"{col} = {facet}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    panels[0].set_ylabel(dotted_lines(y, Y_LABEL_WIDTH))
    # With seeds, the legend's last entry says what the band is.
    said = "mean over seeds" if seeds > 1 else "one seed per curve, no band"
    fig.suptitle(f"{title}{': ' if title else ''}{said}", fontsize="medium")
    shown = [n for n in names if n in handles]
    entries, labels = [handles[n] for n in shown], shown
    if seeds > 1:  # the last entry says what the band is
        entries, labels = [*entries, Patch(color="grey", alpha=0.25, linewidth=0)], [*labels, f"band: {what}"]
    fig.legend(
        entries, labels, title=" / ".join(series) or "metric", fontsize="small", loc="outside right upper"
    )
    return fig


def save(fig: Figure, path: Path) -> None:
    """Written by the file's suffix; a path that cannot be written is the user's to fix."""
    try:
        fig.savefig(path)
    except OSError as e:
        raise UserError(f"--out {path}: cannot write it ({e.strerror or e})") from None


def trial_points(study: Study, frame: pd.DataFrame, x: str, y: str, hue: str | None) -> pd.DataFrame:
    """The completed trials' (hue, x, y) from `sweeper.search.trials` rows."""
    plan = study.search_plan
    if y != plan.spec.metric:
        raise UserError(
            f"--y {y}: against a searched parameter, plot the search's metric ({plan.spec.metric})"
        )
    if hue is not None and hue not in plan.group_axes:
        raise UserError(
            f"--hue {hue}: not a group axis of this search{did_you_mean(hue, plan.group_axes)}; "
            f"choose from: {', '.join(plan.group_axes) or 'none'}"
        )
    done = frame[(frame["kind"] == "trial") & frame[y].notna()] if not frame.empty else frame
    if done.empty:
        raise UserError(f"no completed trial of study '{study.name}' has {y} yet")
    return done[[*(c for c in (hue,) if c), x, y]].reset_index(drop=True)


def trials_figure(study: Study, done: pd.DataFrame, x: str, y: str, hue: str | None) -> Figure:
    """The search's metric against one searched parameter, a point per completed trial, a colour per `hue`."""
    from matplotlib.figure import Figure

    plan = study.search_plan
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, part in done.groupby(hue, sort=False) if hue else [(None, done)]:
        ax.scatter(part[x], part[y], s=18, label=None if label is None else str(label))
    if getattr(plan.params[x], "log", False):
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide
    ax.set(xlabel=x, ylabel=y)
    ax.grid(alpha=0.3)
    if hue:
        ax.legend(title=hue, fontsize="small")
    fig.suptitle(f"{study.name}: {len(done)} completed trials ({plan.spec.direction} {y})", fontsize="medium")
    return fig


def make_figure(
    store: Store,
    study: str,
    x: str,
    y: str,
    hue: str | None = None,
    col: str | None = None,
    error: ErrorBar = ErrorBar.std,
) -> Figure:
    """What `sweeper plot` draws, before it is saved."""
    name = study_name(study)
    searched = search_study(store, name)  # a search plots the final seeds of each group's best configuration
    if x == STEP:
        finals = final_scope(store, searched, required=True)[0] if searched else None
        data = curve_data(store, name, y, hue, col, error, finals)
        return curve_figure(data, y, hue, col, error, title=name)
    if searched is not None and x in searched.search_plan.params:
        points = trial_points(searched, pd.DataFrame(trials(store, searched)), x, y, hue)
        return trials_figure(searched, points, x, y, hue)
    keys, axes, _ = final_scope(store, searched, required=True) if searched else (None, None, None)
    loaded = load(store, name, [y], keys=keys, axes=axes, flag="--y")
    data = plot_data(loaded, x, hue, col, error)
    if data.empty:
        raise UserError(f"no values of {y} recorded yet for study '{loaded.study}'")
    return figure(data, x, y_label(loaded.metrics, x), hue, col, error, title=loaded.study)
