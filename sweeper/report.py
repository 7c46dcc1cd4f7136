"""`sweeper report`: a study's results aggregated over seeds, with paired deltas against its
baseline, partial-cell flags, a coverage view, and rich / markdown / LaTeX / CSV / JSON output.

The pipeline is load -> summarize -> render. Loading is two queries (memberships with their
cell states; final metrics joined on the memberships), pivoted with numpy, so a store of
900k metric rows reports in well under a second (benchmarks/report.py).
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from sweeper.console import add_columns, open_store, out, print_table, study_name, user_errors
from sweeper.errors import UserError, did_you_mean
from sweeper.spec import SEED_AXIS, Report, Study, canonical, load_yaml, parse_study
from sweeper.store import FINISHED, Store, category

# ----------------------------------------------------------------------------- metric direction

# Words of a metric's last name segment (split on '_' and '-', and the segment whole) that say
# which way is better. A lower-is-better word wins ('top1_err'); a rate ('img_per_s') is higher.
LOWER_IS_BETTER = frozenset({
    "loss", "losses", "nll", "ce", "xent", "crossentropy", "err", "error", "errors", "wer", "cer", "ter",
    "ppl", "perplexity", "bpd", "bpc", "rmse", "mse", "mae", "absrel", "sqrel", "silog", "fid", "kid",
    "lpips",
    "seconds", "secs", "sec", "ms", "minutes", "hours", "time", "duration", "latency", "runtime", "elapsed",
})
HIGHER_IS_BETTER = frozenset({
    "acc", "accuracy", "top1", "top5", "miou", "iou", "map", "ap", "ap50", "ap75", "f1", "auc", "auroc",
    "precision", "recall", "bleu", "rouge", "psnr", "ssim", "dice", "delta1", "delta2", "delta3", "d1",
    "throughput",
})
RATE = re.compile(r"(^|[_\-])per[_\-]?(s|sec|second)$")  # img_per_s, samples_per_sec
# Prefixes of metrics that describe the model rather than score it: listed after the scores, no delta.
NEUTRAL_PREFIXES = ("params.", "flops.", "analysis.", "memory.")
DIRECTION = {"min": -1, "max": 1, "none": 0}


def direction(metric: str, declared: Mapping[str, int] | None = None) -> int:
    """+1 if higher is better, -1 if lower is better, 0 if unknown (never marked best).

    The study's `report.directions` globs (`declared`, first match wins) come first; then the
    name: `linear_depth.nyu.rmse`, `train.loss`, `pretrain.seconds`, `lm.ppl` are lower-is-better,
    `linear_seg.ade20k.miou`, `knn.imagenet.top1` higher; `pretrain.steps`, `params.total` unknown.
    """
    for pattern, sign in (declared or {}).items():
        if fnmatchcase(metric, pattern):
            return sign
    if metric.startswith(NEUTRAL_PREFIXES):
        return 0
    last = metric.rsplit(".", 1)[-1].lower()
    words = {last, re.sub(r"[_\-]", "", last), *re.split(r"[_\-]", last)}
    if words & LOWER_IS_BETTER and not RATE.search(last):
        return -1
    return 1 if words & HIGHER_IS_BETTER or RATE.search(last) else 0


def _describes_model(metric: str) -> bool:
    return metric.startswith(NEUTRAL_PREFIXES)


def declared_directions(raw: Mapping[str, Any]) -> dict[str, int]:
    """A study's `report.directions` as glob -> sign (validated by `sweeper plan` when recorded)."""
    declared = Report.model_validate(raw.get("report") or {}).directions
    return {glob: DIRECTION[d] for glob, d in declared.items()}


# ----------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    """A study's members (one row per cell: key, labels, seed, state, one column per metric)."""

    study: str
    frame: pd.DataFrame
    axes: list[str]  # non-seed axes, in file order
    named_axes: list[str]  # axes of named variants (the default rows)
    baseline: dict | None  # axis -> label of the reference variant
    metrics: list[str]  # metric columns of `frame`, in report order
    directions: dict[str, int] = field(default_factory=dict)  # metric glob -> sign, over the name rule


def _study_meta(spec_text: str, file: str) -> tuple[list[str], list[str], dict | None, dict[str, int]]:
    """Axis names, named-variant axes, baseline and declared directions from the recorded study text.

    Reads the YAML rather than re-expanding the study, which for 10,000 cells would cost more
    than the whole report; the text was validated by `sweeper plan` when it was recorded.
    """
    raw = load_yaml(spec_text, file) or {}
    axes: list[str] = []
    named: list[str] = []
    for name, values in (raw.get("axes") or {}).items():
        group = (values if isinstance(values, list) else [values]) if name == "zip" else [{name: values}]
        for sub in group:
            for axis, v in sub.items():
                axes.append(str(axis).lstrip("+"))
                if isinstance(v, dict):
                    named.append(axes[-1])
    baseline = raw.get("baseline")
    if isinstance(baseline, str):
        baseline = {named[0]: baseline} if len(named) == 1 else None
    return axes, named, baseline, declared_directions(raw)


def _column(labels: list[Any]) -> list[Any]:
    """Labels are grouped and merged on: list or mapping labels are keyed by their canonical JSON."""
    if {list, dict} & set(map(type, labels)):
        return [canonical(v) if isinstance(v, list | dict) else v for v in labels]
    return labels


def default_metrics(names: Iterable[str], cap: int) -> tuple[list[str], int]:
    """Every final metric but the per-block analysis ones, scores first, then parameters and FLOPs."""
    chosen = sorted((n for n in names if not n.startswith("analysis.")),
                    key=lambda n: (_describes_model(n), n))
    return chosen[:cap], max(0, len(chosen) - cap)


def load(store: Store, study: str, patterns: Sequence[str] | None = None, *, analysis: bool = True,
         keys: Collection[str] | None = None, axes: list[str] | None = None,
         flag: str = "--metric") -> Loaded:
    """Load a study's live members and the final metrics (step IS NULL) of those finished.

    `patterns` are globs over metric names, pushed into SQL as LIKE filters so only the metrics
    asked for are read; without them every metric is read (but analysis.* when `analysis` is
    false). A glob that matches nothing is a UserError with a did-you-mean. When a final
    metric was recorded twice, the last recorded wins (as in Store.metrics). `keys` keeps only
    those cells and `axes` replaces the study's axes (a search's final-seed cells, by group).
    `flag` is the option the patterns came from, named in that error (`sweeper plot` takes --y).
    """
    row = store.study_row(study)
    file_axes, named, baseline, directions = _study_meta(row.spec_text, row.file)
    members = store.members(row.id)
    pivot = _pivot(members, store.metric_values(row.id, patterns, analysis=analysis))
    if pivot is None:  # a final value recorded twice (re-ingested): read again in id order, last wins
        pivot = _pivot(members, store.metric_values(row.id, patterns, analysis=analysis, ordered=True), ordered=True)
    matrix, found = pivot
    # Only finished cells' values count: a cell failed on a NaN keeps its finite values in the store only.
    matrix[np.fromiter((m[3] not in FINISHED for m in members), dtype=bool, count=len(members))] = np.nan
    kept = ~np.isnan(matrix).all(axis=0)
    matrix, found = matrix[:, kept], [n for n, k in zip(found, kept, strict=True) if k]

    labels = json.loads("[" + ",".join(m[2] for m in members) + "]")
    all_axes = axes if axes is not None else (
        file_axes + [a for a in (labels[0] if labels else {}) if a not in file_axes and a != SEED_AXIS])
    frame = pd.DataFrame(
        {
            "key": [m[1] for m in members],
            **{a: _column([lab.get(a) for lab in labels]) for a in all_axes},
            SEED_AXIS: [lab.get(SEED_AXIS) for lab in labels],
            "state": [m[3] for m in members],
        }
    )
    frame["category"] = frame["state"].map(category)

    # A metric named like a label column (a task returning its "seed") would shadow the label.
    reported = [n for n in found if n not in frame.columns]
    if patterns:
        metrics: list[str] = []
        for p in patterns:
            hits = sorted(n for n in reported if fnmatchcase(n, p))
            if not hits:
                known = store.metric_names(row.id)
                shown = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
                raise UserError(f"{flag} {p}: matches no final metric of study '{study}'"
                                f"{did_you_mean(p, known)}; metrics: {shown or 'none recorded yet'}")
            metrics += [n for n in hits if n not in metrics]
    else:
        metrics = sorted(reported, key=lambda n: (_describes_model(n), n))
    index = {n: i for i, n in enumerate(found)}
    data = pd.DataFrame(matrix[:, [index[m] for m in metrics]], columns=metrics, index=frame.index)
    frame = pd.concat([frame, data], axis=1)
    if keys is not None:
        frame = frame[frame["key"].isin(set(keys))].reset_index(drop=True)
    return Loaded(study, frame, all_axes, [a for a in named if a in all_axes], baseline, metrics, directions)


def _pivot(members: Sequence[tuple], rows: list[tuple], *, ordered: bool = False) -> tuple[np.ndarray, list[str]] | None:
    """(members x metrics matrix, metric names) from (position, name, value) rows.

    Returns None when a (member, metric) pair occurs twice and `rows` is not known to be in
    insertion order, so the caller can re-read them ordered and let the last value win.
    """
    positions = np.fromiter((m[0] for m in members), dtype=np.int64, count=len(members))
    if not rows:
        return np.empty((len(members), 0)), []
    # Column by column with itemgetter: a third of the cost of zip(*rows) on 900k tuples.
    position = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=len(rows))
    value = np.fromiter(map(itemgetter(2), rows), dtype=float, count=len(rows))
    codes, names = pd.factorize(np.array(list(map(itemgetter(1), rows)), dtype=object))
    flat = np.searchsorted(positions, position) * len(names) + codes
    matrix = np.full((len(members), len(names)), np.nan)
    if not ordered and np.bincount(flat, minlength=matrix.size).max() > 1:
        return None
    matrix.reshape(-1)[flat] = value  # in order: later writes win
    return matrix, list(names)


# ----------------------------------------------------------------------------- aggregation

CATEGORIES = ("done", "running", "failed", "new")  # sweeper.store.category's values
FLAGS = {"running": "*", "failed": "†", "new": "‡"}
FLAG_LEGEND = {
    "running": "some seeds are still running or pending",
    "failed": "some seeds failed, were interrupted or cancelled",
    "new": "some seeds have not been run yet",
}
CI_LEVEL = 0.95


@dataclass
class Summary:
    """The report's content: one tidy row per (row group, column group, metric), and coverage."""

    study: str
    rows: list[str]  # axes of the table's rows
    cols: list[str]  # axes of its column groups
    pooled: list[str]  # axes in neither: aggregated over together with the seeds
    metrics: list[str]
    baseline: dict | None
    cells: pd.DataFrame  # rows..., cols..., metric, mean, std, n, expected, delta, delta_n, ci_low, ci_high, best, flags
    coverage: pd.DataFrame  # rows..., cols..., done, running, failed, new, total
    notes: list[str] = field(default_factory=list)
    directions: dict[str, int] = field(default_factory=dict)

    def direction(self, metric: str) -> int:
        return direction(metric, self.directions)

    @property
    def groups(self) -> list[str]:
        return self.rows + self.cols


def _check_axes(kind: str, names: Sequence[str], axes: list[str]) -> None:
    for a in names:
        if a not in axes:
            hint = " (the report aggregates over seeds)" if a == SEED_AXIS else did_you_mean(a, axes)
            raise UserError(f"{kind} {a}: not an axis of this study{hint}; axes: {', '.join(axes) or 'none'}")


def summarize(loaded: Loaded, rows: Sequence[str] | None = None, cols: Sequence[str] | None = None,
              pool: Sequence[str] = ()) -> Summary:
    """Aggregate over seeds per (rows × cols) group; pair seeds against the baseline for deltas.

    An axis in neither rows nor columns is averaged over with the seeds only when `pool` names
    it (the legend says so); otherwise it is a UserError naming it, since its cells would pass
    for seeds. A delta is the mean of per-seed differences between a variant's cell and the
    baseline cell with the same labels on every other axis (pooled ones too) and the same seed;
    its 95 % interval comes from the paired t distribution and needs at least two pairs. Groups
    are numbered once (ngroup) and every statistic is a (groups × metrics) array.
    """
    axes = loaded.axes
    for flag, names in (("--rows", rows), ("--cols", cols), ("--pool", pool)):
        _check_axes(flag, names or [], axes)
    candidates = [a for a in loaded.named_axes if a not in pool] or [a for a in axes if a not in pool]
    row_axes = list(rows) if rows else candidates[:1]
    col_axes = list(cols) if cols is not None else [a for a in axes if a not in row_axes and a not in pool]
    for flag, names in (("--cols", col_axes), ("--pool", pool)):
        if shared := [a for a in axes if a in row_axes and a in names]:
            raise UserError(f"--rows and {flag} share {', '.join(shared)}; an axis is in one of them only")
    if shared := [a for a in axes if a in col_axes and a in pool]:
        raise UserError(f"--cols and --pool share {', '.join(shared)}; an axis is in one of them only")
    frame, metrics = loaded.frame, loaded.metrics
    # An axis left out with a single label in these cells (a search's fixed axis) averages nothing.
    shown = row_axes + col_axes + list(pool)
    if left := [a for a in axes if a not in shown and frame[a].nunique(dropna=False) > 1]:
        rows_, cols_ = ", ".join(row_axes) or "none", ", ".join(col_axes) or "none"
        raise UserError(
            f"the table's rows ({rows_}) and columns ({cols_}) leave out {', '.join(left)}: its cells would "
            f"be averaged as if they were seeds. Put it in --rows or --cols, or average over it on purpose with "
            f"{' '.join(f'--pool {a}' for a in left)}")
    pooled = [a for a in axes if a in pool]
    notes: list[str] = []
    groups = row_axes + col_axes
    if not groups:  # a study without axes: one group
        frame = frame.assign(study=loaded.study)
        groups = row_axes = ["study"]

    gid = frame.groupby(groups, sort=False, dropna=False).ngroup().to_numpy()
    n_groups = int(gid.max()) + 1 if len(gid) else 0
    labels = frame.loc[~pd.Series(gid).duplicated().to_numpy(), groups].reset_index(drop=True)  # in gid order
    if pooled:  # a variant run at one depth, a baseline at two: their pooled means differ by design
        combos = frame[pooled].astype(str).agg("|".join, axis=1).groupby(gid).agg(frozenset)
        if combos.nunique() > 1:
            notes.append(f"the groups cover different {', '.join(pooled)} labels: their pooled means do not "
                         "compare like with like; the paired deltas do")

    coverage = labels.copy()
    for cat in CATEGORIES:
        coverage[cat] = np.bincount(gid[(frame["category"] == cat).to_numpy()], minlength=n_groups)
    coverage["total"] = np.bincount(gid, minlength=n_groups)

    grouped = frame[metrics].groupby(gid, sort=True)
    mean = grouped.mean().to_numpy()
    std = grouped.std(ddof=1).to_numpy()
    n = grouped.count().to_numpy()
    delta, delta_n, ci_low, ci_high = _deltas(frame, gid, n_groups, loaded, metrics, pooled, notes)

    sign = np.array([direction(m, loaded.directions) for m in metrics], dtype=float)
    score = np.where(sign != 0, mean * sign, np.nan)
    column_of = labels.groupby(col_axes, sort=False, dropna=False).ngroup().to_numpy() if col_axes else np.zeros(n_groups)
    best_score = pd.DataFrame(score).groupby(column_of).transform("max").to_numpy()
    best = ~np.isnan(score) & np.isclose(score, best_score)

    flags = np.full(n_groups, "", dtype=object)
    for cat, mark in FLAGS.items():
        flags = np.where(coverage[cat].to_numpy() > 0, flags + mark, flags)

    m = len(metrics)
    cells = labels.loc[labels.index.repeat(m)].reset_index(drop=True)
    cells["metric"] = np.tile(np.array(metrics, dtype=object), n_groups)
    for name, values in (("mean", mean), ("std", std), ("n", n), ("expected", np.repeat(coverage["total"].to_numpy(), m)),
                         ("delta", delta), ("delta_n", delta_n), ("ci_low", ci_low), ("ci_high", ci_high),
                         ("best", best), ("flags", np.repeat(flags, m))):
        cells[name] = np.asarray(values).reshape(-1)
    return Summary(loaded.study, row_axes, col_axes, pooled, metrics, loaded.baseline, cells, coverage, notes,
                   loaded.directions)


def _deltas(frame: pd.DataFrame, gid: np.ndarray, n_groups: int, loaded: Loaded, metrics: list[str],
            pooled: list[str], notes: list[str]) -> tuple[np.ndarray, ...]:
    """Per group and metric: mean paired difference against the baseline, n pairs, 95 % CI bounds."""
    shape = (n_groups, len(metrics))
    none = (np.full(shape, np.nan), np.zeros(shape, dtype=int), np.full(shape, np.nan), np.full(shape, np.nan))
    baseline = loaded.baseline
    if not baseline or not metrics:
        return none
    if missing := [a for a in baseline if a not in loaded.axes]:
        notes.append(f"no deltas: the baseline names axes the study lacks ({', '.join(missing)})")
        return none
    if in_pooled := [a for a in baseline if a in pooled]:
        notes.append(f"no deltas: the baseline axis {', '.join(in_pooled)} is pooled; put it in --rows or --cols")
        return none
    is_base = np.ones(len(frame), dtype=bool)
    for axis, label in baseline.items():
        is_base &= frame[axis].map(canonical).to_numpy() == canonical(label)
    if not is_base.any():
        notes.append("no deltas: no cell of the baseline variant is in the study")
        return none
    pair_on = [a for a in loaded.axes if a not in baseline] + [SEED_AXIS]
    base = frame.loc[is_base, pair_on + metrics]
    others = frame.loc[~is_base, pair_on + metrics].assign(_gid=gid[~is_base])
    paired = others.merge(base, on=pair_on, how="inner", suffixes=("", " @baseline"))
    diff = pd.DataFrame(paired[metrics].to_numpy() - paired[[f"{m} @baseline" for m in metrics]].to_numpy())
    g = diff.groupby(paired["_gid"].to_numpy())
    index = pd.RangeIndex(n_groups)
    delta = g.mean().reindex(index).to_numpy()
    sd = g.std(ddof=1).reindex(index).to_numpy()
    n = g.count().reindex(index, fill_value=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t_quantile(n) * sd / np.sqrt(n)
    return delta, n, delta - half, delta + half


def t_quantile(n: np.ndarray) -> np.ndarray:
    """The two-sided 95 % Student t quantile for samples of size n (NaN where n < 2).

    scipy (installed with scikit-image) is imported on first use, and scipy.special rather than
    scipy.stats: importing scipy.stats alone takes ~0.7 s, most of a large report's time.
    """
    from scipy.special import stdtrit

    return stdtrit(np.where(np.asarray(n) >= 2, np.asarray(n, dtype=float) - 1, np.nan), 0.5 + CI_LEVEL / 2)


# ----------------------------------------------------------------------------- number formatting


def _decimals(values: Iterable[float]) -> int:
    """Three significant digits of the column's largest magnitude: 47.3, 0.812, 812."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(max(finite))))))


def _si(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.3g}"


def _is_pct(metric: str) -> bool:
    return metric.endswith(("pct", "percent"))


def _is_count(metric: str) -> bool:
    return metric.startswith(("params.", "flops.")) and not _is_pct(metric)


@dataclass(slots=True)
class Entry:
    """One table cell's parts, formatted; renderers only arrange and style them."""

    value: str  # "47.3" (empty when there is no value)
    spread: str  # "0.3" (empty when n < 2 or constant)
    n: str  # "2/3" when fewer values than members, else ""
    delta: str  # "+2.1"
    interval: str  # "[1.5, 2.7]"
    verdict: int  # +1 better than baseline (interval clear of 0), -1 worse, 0 neither
    best: bool
    flags: str


def _entries(summary: Summary) -> dict[tuple, dict[tuple, Entry]]:
    """(row labels) -> (col labels..., metric) -> Entry."""
    cells = summary.cells
    means = cells.groupby("metric", sort=False)["mean"]
    kind = {m: ("count" if _is_count(m) else "pct" if _is_pct(m) else "") for m in summary.metrics}
    decimals = {m: _decimals(means.get_group(m).tolist()) if m in means.groups else 2 for m in summary.metrics}
    decimals |= {m: max(d, 1) for m, d in decimals.items() if kind[m] == "pct"}
    sign = {m: summary.direction(m) for m in summary.metrics}
    table: dict[tuple, dict[tuple, Entry]] = {}
    nr, nl = len(summary.rows), len(summary.rows) + len(summary.cols)
    fields = ["metric", "mean", "std", "n", "delta", "delta_n", "ci_low", "ci_high", "expected", "best", "flags"]
    columns = [cells[c].tolist() for c in [*summary.rows, *summary.cols, *fields]]
    for rec in zip(*columns, strict=True):
        metric, mean, std, n, delta, delta_n, lo, hi, expected, best, flags = rec[nl:]
        d, k = decimals[metric], kind[metric]
        spread = ""
        if n == 0 or not math.isfinite(mean):
            value = ""
        elif k == "count":
            value, spread = _si(mean), (_si(std) if n > 1 and std > 0 else "")
        else:
            value = f"{mean:+.{d}f} %" if k == "pct" else f"{mean:.{d}f}"
            spread = f"{std:.{d}f}" if n > 1 and std > 0 else ""
        # An unknown direction still has a delta (uncoloured); a model's size has none.
        judged = sign[metric] != 0 or not _describes_model(metric)
        show_delta = judged and delta_n > 0 and math.isfinite(delta)
        has_interval = show_delta and delta_n >= 2 and math.isfinite(lo)
        verdict = (sign[metric] if lo > 0 else -sign[metric] if hi < 0 else 0) if has_interval else 0
        table.setdefault(rec[:nr], {})[(*rec[nr:nl], metric)] = Entry(
            value,
            spread,
            f"{n}/{expected}" if 0 < n < expected else "",
            f"{delta:+.{d}f}" if show_delta else "",
            f"[{lo:+.{d}f}, {hi:+.{d}f}]" if has_interval else "",
            verdict,
            best,
            flags,
        )
    return table


def _columns(summary: Summary) -> list[tuple]:
    """Column keys (col labels..., metric) in the order the groups first appear."""
    groups = list(dict.fromkeys(map(tuple, summary.coverage[summary.cols].itertuples(index=False, name=None))))
    return [(*g, m) for g in groups for m in summary.metrics]


def _row_keys(summary: Summary) -> list[tuple]:
    return list(dict.fromkeys(map(tuple, summary.coverage[summary.rows].itertuples(index=False, name=None))))


def _col_title(summary: Summary, key: tuple, sep: str) -> str:
    """'model.scale=base · linear_seg.ade20k.miou': a bare value would not say which axis it is."""
    return sep.join([*(f"{a}={v}" for a, v in zip(summary.cols, key[:-1])), key[-1]])


def _legend(summary: Summary, used: set[str]) -> list[str]:
    lines = [f"{FLAGS[c]} {FLAG_LEGEND[c]}" for c in FLAGS if FLAGS[c] in used]
    lines += _direction_legend(summary)
    if summary.baseline:
        base = ", ".join(f"{k}={v}" for k, v in summary.baseline.items())
        lines.append(f"deltas: mean paired difference vs {base}, each pair equal on every other axis and "
                     "seed; 95 % paired-t interval (n >= 2)")
    if summary.pooled:
        flags = " ".join(f"--pool {a}" for a in summary.pooled)
        lines.append(f"mean ± std over seeds and {', '.join(summary.pooled)} pooled together ({flags}): "
                     "one value per cell; n/N when fewer cells have the value than the group has")
    else:
        lines.append("mean ± std over seeds; n/N when fewer seeds have the value than the group has cells")
    return lines + summary.notes


def _direction_legend(summary: Summary) -> list[str]:
    """Which way each metric is judged, so a bold value says what it claims and an unjudged one shows."""
    by = {s: [m for m in summary.metrics if summary.direction(m) == s] for s in (1, -1, 0)}
    words = ((1, "higher is better"), (-1, "lower"))
    parts = [f"{word} for {', '.join(by[s])}" for s, word in words if by[s]]
    if not parts:
        return []
    if unjudged := [m for m in by[0] if not _describes_model(m)]:  # parameters and FLOPs are never judged
        parts.append(f"never bold (no known direction; see report.directions): {', '.join(unjudged)}")
    return [f"bold: best of its column; {'; '.join(parts)}"]


# ----------------------------------------------------------------------------- renderers


class Format(StrEnum):
    rich = "rich"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    json = "json"
    html = "html"  # the whole study on one page: sweeper.report_html


EXTENSIONS = {".md": Format.markdown, ".markdown": Format.markdown, ".tex": Format.latex, ".csv": Format.csv,
              ".json": Format.json, ".txt": Format.rich, ".html": Format.html, ".htm": Format.html}
RICH_MAX_COLUMNS = 48  # wider tables move their column axes into the rows (every value kept, with a note)
RICH_MAX_ROWS = 50  # cut there in a terminal, with a note (rich takes ~7 ms a row); pipes and files never are


def render_csv(summary: Summary) -> str:
    """Tidy rows: labels..., metric, mean, std, n, expected, delta, delta_n, ci_low, ci_high, best, flags.

    Floats keep 12 significant digits (statistics, not raw data; formatting them is most of the cost).
    """
    buf = io.StringIO()
    summary.cells.to_csv(buf, index=False, lineterminator="\n", float_format="%.12g")
    return buf.getvalue()


def render_json(summary: Summary) -> str:
    """One object; its `cells` (the tidy rows) and `coverage` are serialized by pandas (NaN -> null)."""
    head = {
        "study": summary.study,
        "rows": summary.rows,
        "cols": summary.cols,
        "pooled": summary.pooled,
        "baseline": summary.baseline,
        "metrics": summary.metrics,
        "directions": {m: summary.direction(m) for m in summary.metrics},
        "notes": summary.notes,
    }
    frames = [f'"{name}": {frame.to_json(orient="records", double_precision=15)}'
              for name, frame in (("cells", summary.cells), ("coverage", summary.coverage))]
    return json.dumps(head, default=str)[:-1] + ", " + ", ".join(frames) + "}\n"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def render_markdown(summary: Summary) -> str:
    """A GitHub pipe table; the best value per column in bold; the legend below."""
    entries, columns, rows = _entries(summary), _columns(summary), _row_keys(summary)
    used: set[str] = set()
    header = [*summary.rows, *(_col_title(summary, c, " · ") for c in columns)]
    lines = ["| " + " | ".join(map(md_escape, header)) + " |",
             "|" + "|".join([":---"] * len(summary.rows) + ["---:"] * len(columns)) + "|"]
    for r in rows:
        cells = [md_escape(str(v)) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("–")
                continue
            text = e.value + (f" ± {e.spread}" if e.spread else "")
            text = f"**{text}**" if e.best else text
            if e.delta:
                text += f" ({e.delta}{' ' + e.interval if e.interval else ''})"
            if e.n:
                text += f" n={e.n}"
            text += md_escape(e.flags)
            used.update(e.flags)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {md_escape(line)}" for line in _legend(summary, used)) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
        ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$", "…": r"\dots{}", "–": "--",
        "·": r"$\cdot$"}
_TEX_FLAGS = {"*": r"$^{*}$", "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$"}
TEX_PREAMBLE = r"% sweeper report: needs \usepackage{booktabs} in the preamble"


def tex_escape(text: str) -> str:
    """Text-mode LaTeX for any string (pdflatex's default OT1 font would print '<' as '¡'); '--' stays
    two hyphens (a flag), not an en dash."""
    return "".join(_TEX.get(c, c) for c in re.sub("-(?=-)", "-\0", text)).replace("\0", "{}")


def tex_legend(lines: Iterable[str]) -> list[str]:
    """The legend as text under the tabular (not % comments): a pasted table says what it means."""
    text = [(_TEX_FLAGS[line[0]] + tex_escape(line[1:])) if line[:1] in _TEX_FLAGS else tex_escape(line)
            for line in lines]
    return [r"\par\smallskip", r"{\footnotesize", *(f"{line}\\par" for line in text), "}"]


def render_latex(summary: Summary) -> str:
    """A booktabs tabular (the package named in its first line), one multicolumn header per column
    group with its axis names, `$\\mathbf{x} \\pm y$` cells with their deltas and intervals, and
    the legend below it as text."""
    entries, columns, rows = _entries(summary), _columns(summary), _row_keys(summary)
    nr, nm = len(summary.rows), len(summary.metrics)
    used: set[str] = set()
    lines = [TEX_PREAMBLE, r"\begin{tabular}{" + "l" * nr + "r" * len(columns) + "}", r"\toprule"]
    if summary.cols:
        groups = [columns[i][:-1] for i in range(0, len(columns), nm)]
        titles = [", ".join(f"{a}={v}" for a, v in zip(summary.cols, g)) for g in groups]
        spans = [r"\multicolumn{%d}{c}{%s}" % (nm, tex_escape(t)) for t in titles]
        lines.append(" & ".join([""] * nr + spans) + r" \\")
        lines.append(" ".join(r"\cmidrule(lr){%d-%d}" % (nr + 1 + i * nm, nr + (i + 1) * nm) for i in range(len(groups))))
    lines.append(" & ".join([tex_escape(a) for a in summary.rows] + [tex_escape(c[-1]) for c in columns]) + r" \\")
    lines.append(r"\midrule")
    for r in rows:
        cells = [tex_escape(str(v)) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("--")
                continue
            value = tex_escape(e.value)
            core = rf"\mathbf{{{value}}}" if e.best else value
            text = f"${core}" + (rf" \pm {e.spread}$" if e.spread else "$")
            if e.delta:
                text += rf" {{\scriptsize ${e.delta}$" + (f" ${e.interval}$" if e.interval else "") + "}"
            if e.n:
                text += rf" {{\scriptsize n={e.n}}}"
            text += "".join(_TEX_FLAGS[f] for f in e.flags)
            used.update(e.flags)
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines + tex_legend(_legend(summary, used))) + "\n"


def render_rich(summary: Summary, max_rows: int | None = None) -> Table:
    """A terminal table: bold best value, delta in green (better, interval clear of 0) or red.

    `max_rows` cuts a long table for a terminal (rich takes ~7 ms a row), with a note; a pipe
    or a file gets every row. Width is sweeper.console.print_table's concern: it never cuts.
    """
    if summary.cols and len(_columns(summary)) > RICH_MAX_COLUMNS:
        summary = _fold_cols_into_rows(summary)
    rows = _row_keys(summary)
    shown = rows[:max_rows] if max_rows else rows
    if len(shown) < len(rows):  # format only what is shown
        keys = pd.MultiIndex.from_frame(summary.cells[summary.rows])
        summary = replace(summary, cells=summary.cells[keys.isin(pd.MultiIndex.from_tuples(shown))])
    entries, columns = _entries(summary), _columns(summary)
    table = Table(title=f"{summary.study}", title_justify="left", show_lines=bool(summary.baseline))
    titles = [_col_title(summary, c, "\n") for c in columns]
    add_columns(table, (*summary.rows, *titles), right=titles)
    used: set[str] = set()
    for r in shown:
        cells = [str(v) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("[dim]–[/]")
                continue
            text = e.value + (f" ± {e.spread}" if e.spread else "")
            text = f"[bold]{text}[/]" if e.best else text
            text += f"[yellow]{e.flags}[/]" if e.flags else ""
            text += f" [dim]n={e.n}[/]" if e.n else ""
            if e.delta:
                style = {1: "green", -1: "red", 0: "dim"}[e.verdict]
                text += f"\n[{style}]{e.delta}{' ' + e.interval if e.interval else ''}[/]"
            used.update(e.flags)
            cells.append(text)
        table.add_row(*cells)
    caption = _legend(summary, used)
    if len(shown) < len(rows):
        caption.insert(0, f"… {len(rows) - len(shown):,} more rows; pipe it, or use --out FILE, for all")
    table.caption = "\n".join(caption)
    return table


def _fold_cols_into_rows(summary: Summary) -> Summary:
    """The same summary with its column axes moved into the rows (columns: the metrics only)."""
    rows = summary.rows + summary.cols
    notes = summary.notes + [f"{len(_columns(summary))} columns are too many for one table: "
                             f"{', '.join(summary.cols)} shown as rows (see --cols)"]
    return replace(summary, rows=rows, cols=[], notes=notes)


def coverage_entries(summary: Summary) -> tuple[list[tuple], list[tuple], dict[tuple, str]]:
    """Row keys, column-group keys and a compact text per group: '3/3 ✓', '1/3 ⟳1 ✗1'."""
    rows = _row_keys(summary)
    groups = list(dict.fromkeys(map(tuple, summary.coverage[summary.cols].itertuples(index=False, name=None))))
    text = {}
    for rec in summary.coverage.itertuples(index=False, name=None):
        done, running, failed, new, total = rec[-5:]
        parts = [f"{done}/{total}"]
        if done == total:
            parts.append("✓")
        parts += [f"⟳{running}"] * bool(running) + [f"✗{failed}"] * bool(failed) + [f"·{new}"] * bool(new)
        text[rec[: len(rec) - 5]] = " ".join(parts)
    return rows, groups, text


def render_coverage(summary: Summary, fmt: Format, max_rows: int | None = None) -> str | Table:
    """Which groups are done / running (⟳) / failed (✗) / not run (·), so one sees what a table awaits."""
    if fmt in (Format.csv, Format.json):
        frame = summary.coverage
        return frame.to_csv(index=False, lineterminator="\n") if fmt == Format.csv else frame.to_json(orient="records") + "\n"
    if fmt == Format.rich and len(summary.coverage[summary.cols].drop_duplicates()) > RICH_MAX_COLUMNS // 2:
        summary = _fold_cols_into_rows(summary)
    rows, groups, text = coverage_entries(summary)
    titles = [", ".join(f"{a}={v}" for a, v in zip(summary.cols, g)) or "cells" for g in groups]
    grid = [[*map(str, r), *(text.get((*r, *g), "–") for g in groups)] for r in rows]
    if fmt == Format.rich:
        caption = ["done/cells; ✓ complete, ⟳ running, ✗ failed, · not run yet"]
        if max_rows and len(grid) > max_rows:
            caption.insert(0, f"… {len(grid) - max_rows:,} more rows; pipe it, or use --out FILE, for all")
        table = Table(title=f"{summary.study}: coverage", title_justify="left", caption="\n".join(caption))
        add_columns(table, (*summary.rows, *titles), right=titles)
        for line in grid[:max_rows] if max_rows else grid:
            table.add_row(*line)
        return table
    if fmt == Format.markdown:
        lines = ["| " + " | ".join(map(md_escape, [*summary.rows, *titles])) + " |",
                 "|" + "|".join([":---"] * len(summary.rows) + ["---:"] * len(titles)) + "|"]
        lines += ["| " + " | ".join(map(md_escape, line)) + " |" for line in grid]
        return "\n".join(lines) + "\n"
    lines = [TEX_PREAMBLE, r"\begin{tabular}{" + "l" * len(summary.rows) + "r" * len(titles) + "}",
             r"\toprule",
             " & ".join(map(tex_escape, [*summary.rows, *titles])) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c.replace("✓", "ok").replace("⟳", "run ").replace("✗", "fail ").replace("·", "new "))
                         for c in line) + r" \\" for line in grid]
    legend = ["done/cells; ok: complete, run: running, fail: failed, new: not run yet"]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"] + tex_legend(legend)) + "\n"


def render(summary: Summary, fmt: Format, max_rows: int | None = None) -> str | Table:
    if fmt == Format.rich:
        return render_rich(summary, max_rows)
    return {
        Format.markdown: render_markdown,
        Format.latex: render_latex,
        Format.csv: render_csv,
        Format.json: render_json,
    }[fmt](summary)


def _complete(summary: Summary) -> bool:
    return bool((summary.coverage["done"] == summary.coverage["total"]).all())


# ----------------------------------------------------------------------------- command

DEFAULT_METRIC_CAP = 24


def search_study(store: Store, name: str) -> Study | None:
    """The recorded study, expanded, when it has a search (a plain study is never re-expanded)."""
    row = store.study_row(name)
    if "search" not in (load_yaml(row.spec_text, row.file) or {}):
        return None
    study = parse_study(row.spec_text, row.file)
    study.workdir = store.workdir(study)
    return study


def final_scope(store: Store, study: Study, groups: list | None = None, *,
                required: bool) -> tuple[list[str], list[str], dict[str, int]]:
    """A search's ablation view: its final-seed cells, its group axes, and its metric's direction.

    `groups` are `sweeper.search.results` when the caller has them already.
    """
    from sweeper.search import results

    keys = [k for g in (groups if groups is not None else results(store, study)) for k in g.finals]
    if not keys and required and not study.search.final_seeds:
        raise UserError(f"study '{study.name}' searches without final seeds: set search.final_seeds to repeat each "
                        f"group's best configuration (`sweeper report {study.name}` shows the trials)")
    if not keys and required:
        raise UserError(f"study '{study.name}' has no final-seed cells yet: they are made once a group has spent its trials")
    spec = study.search.spec
    return keys, study.search.group_axes, {spec.metric: 1 if spec.direction == "maximize" else -1}


def build(store: Store, study: str, rows: Sequence[str] | None = None, cols: Sequence[str] | None = None,
          metrics: Sequence[str] | None = None, *, keys: Collection[str] | None = None,
          axes: list[str] | None = None, directions: dict[str, int] | None = None,
          pool: Sequence[str] = ()) -> Summary:
    """Load and summarize; without --metric, the default set (see default_metrics) capped with a note."""
    loaded = load(store, study, metrics or None, analysis=False, keys=keys, axes=axes)
    loaded.directions = {**(directions or {}), **loaded.directions}  # a search's own metric first
    notes = []
    if not metrics:
        chosen, dropped = default_metrics(loaded.metrics, DEFAULT_METRIC_CAP)
        if dropped:
            notes.append(f"showing {len(chosen)} of {len(chosen) + dropped} metrics; choose with --metric GLOB")
        loaded.metrics = chosen
    summary = summarize(loaded, rows, cols, pool)
    summary.notes = notes + summary.notes
    return summary


def _write(parts: list[str | Table], path: Path | None) -> None:
    """To the terminal, a pipe or a file; a table is never cut to a width (see print_table)."""
    if path is None:
        for part in parts:
            if isinstance(part, Table):
                print_table(part)
            else:
                out.file.write(part)
        return
    with path.open("w") as fh:
        for i, part in enumerate(parts):
            if isinstance(part, Table):
                print_table(part, Console(file=fh, color_system=None))
            else:
                fh.write(("\n" if i else "") + part)


@user_errors
def report_command(
    study: Annotated[str, typer.Argument(help="Study name (or its YAML file).", show_default=False)],
    rows: Annotated[list[str] | None, typer.Option("--rows", help="Axes of the table's rows (repeatable; default: the named-variants axis).")] = None,
    cols: Annotated[list[str] | None, typer.Option("--cols", help="Axes of the column groups (repeatable; default: the other axes).")] = None,
    pool: Annotated[list[str] | None, typer.Option(
        "--pool", help="Average over this axis with the seeds (repeatable); an axis in neither --rows nor "
                       "--cols must be named here.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metric name glob (repeatable; default: every final metric but analysis.*).")] = None,
    fmt: Annotated[Format | None, typer.Option("--format", "-f", help="Output format (default: from --out's extension, else rich).")] = None,
    out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of the terminal.")] = None,
    coverage: Annotated[bool, typer.Option("--coverage", help="Only the coverage view: done / running / failed / missing per group.")] = False,
    final: Annotated[bool, typer.Option("--final", help="A search study: only the ablation table of the best configurations' final seeds.")] = False,
    trials: Annotated[bool, typer.Option("--trials", help="A search study: every trial with its hyperparameters and value, best first.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable (as --format json).")] = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="With --out FILE.html: rewrite the page as results arrive (it reloads itself in a "
                        "browser) until no cell is active.")] = False,
) -> None:
    """Ablation table: mean ± std over seeds, paired deltas vs the baseline, partial cells flagged.

    For a study with a search: per group the best trial and its hyperparameters, then the
    ablation table over the final seeds of each group's best configuration.
    """
    from sweeper import search_report
    from sweeper.search import results

    if as_json and fmt not in (None, Format.json):
        raise UserError(f"--json and --format {fmt} ask for two formats; give one")
    if as_json:
        fmt = Format.json
    if fmt is None:
        fmt = EXTENSIONS.get(out_file.suffix.lower(), Format.rich) if out_file else Format.rich
    if fmt == Format.html and (coverage or final or trials):
        raise UserError("--format html is the whole study on one page; "
                        "it takes no --coverage, --final or --trials")
    if watch and (fmt != Format.html or out_file is None):
        raise UserError("--watch rewrites an HTML page as results arrive: give --out FILE.html")
    if fmt == Format.html:
        from sweeper.report_html import command

        command(study_name(study), rows, cols or None, metric, pool or (), out_file, watch)
        return
    parts: list[str | Table] = []
    with open_store(create=False) as store:
        name = study_name(study)
        searched = search_study(store, name)
        keys = axes = directions = None
        if trials and searched is None:
            raise UserError(f"--trials: study '{name}' has no search block")
        if final and searched is None:
            raise UserError(f"--final: study '{name}' has no search block, so no final seeds; "
                            f"its table is `sweeper report {name}` without --final")
        if trials:
            _write([search_report.trials_view(store, searched, fmt)], out_file)
            return
        if searched is not None:
            groups = results(store, searched)
            if not final and not coverage:
                parts.append(search_report.search_view(store, searched, groups, fmt))
            keys, axes, directions = final_scope(store, searched, groups, required=final or coverage)
        summary = None
        if keys is None or keys and (final or coverage or fmt not in (Format.csv, Format.json)):
            summary = build(store, name, rows, cols or None, metric, keys=keys, axes=axes,
                            directions=directions, pool=pool or ())
    max_rows = RICH_MAX_ROWS if out_file is None and out.is_terminal else None
    if summary is not None and coverage:
        parts = [render_coverage(summary, fmt, max_rows)]
    elif summary is not None:
        if fmt == Format.rich and out_file is None and not _complete(summary):
            parts.append(render_coverage(summary, fmt, max_rows))
        parts.append(render(summary, fmt, max_rows))
    _write(parts, out_file)
    if out_file is not None:
        out.print(f"wrote {out_file} ({fmt})", highlight=False)
