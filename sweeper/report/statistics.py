"""Seed statistics: one tidy row per (row group, column group, metric), paired deltas against the
baseline, coverage; and `build`, which loads and summarizes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sweeper.errors import UserError, did_you_mean
from sweeper.report.load import Loaded, default_metrics, direction, load
from sweeper.store import Store
from sweeper.study import (
    SEED_AXIS,
    canonical,
)

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
    cells: (
        pd.DataFrame
    )  # rows..., cols..., metric, mean, std, n, expected, delta, delta_n, ci_low, ci_high, best, flags
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


def summarize(
    loaded: Loaded,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    pool: Sequence[str] = (),
) -> Summary:
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
            "be averaged as if they were seeds. Put it in --rows or --cols, or average over it on purpose "
            "with "
            f"{' '.join(f'--pool {a}' for a in left)}"
        )
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
            notes.append(
                f"the groups cover different {', '.join(pooled)} labels: their pooled means do not "
                "compare like with like; the paired deltas do"
            )

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
    column_of = (
        labels.groupby(col_axes, sort=False, dropna=False).ngroup().to_numpy()
        if col_axes
        else np.zeros(n_groups)
    )
    best_score = pd.DataFrame(score).groupby(column_of).transform("max").to_numpy()
    best = ~np.isnan(score) & np.isclose(score, best_score)

    flags = np.full(n_groups, "", dtype=object)
    for cat, mark in FLAGS.items():
        flags = np.where(coverage[cat].to_numpy() > 0, flags + mark, flags)

    m = len(metrics)
    cells = labels.loc[labels.index.repeat(m)].reset_index(drop=True)
    cells["metric"] = np.tile(np.array(metrics, dtype=object), n_groups)
    for name, values in (
        ("mean", mean),
        ("std", std),
        ("n", n),
        ("expected", np.repeat(coverage["total"].to_numpy(), m)),
        ("delta", delta),
        ("delta_n", delta_n),
        ("ci_low", ci_low),
        ("ci_high", ci_high),
        ("best", best),
        ("flags", np.repeat(flags, m)),
    ):
        cells[name] = np.asarray(values).reshape(-1)
    return Summary(
        loaded.study,
        row_axes,
        col_axes,
        pooled,
        metrics,
        loaded.baseline,
        cells,
        coverage,
        notes,
        loaded.directions,
    )


def _deltas(
    frame: pd.DataFrame,
    gid: np.ndarray,
    n_groups: int,
    loaded: Loaded,
    metrics: list[str],
    pooled: list[str],
    notes: list[str],
) -> tuple[np.ndarray, ...]:
    """Per group and metric: mean paired difference against the baseline, n pairs, 95 % CI bounds."""
    shape = (n_groups, len(metrics))
    none = (
        np.full(shape, np.nan),
        np.zeros(shape, dtype=int),
        np.full(shape, np.nan),
        np.full(shape, np.nan),
    )
    baseline = loaded.baseline
    if not baseline or not metrics:
        return none
    if missing := [a for a in baseline if a not in loaded.axes]:
        notes.append(f"no deltas: the baseline names axes the study lacks ({', '.join(missing)})")
        return none
    if in_pooled := [a for a in baseline if a in pooled]:
        notes.append(
            f"no deltas: the baseline axis {', '.join(in_pooled)} is pooled; put it in --rows or --cols"
        )
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


DEFAULT_METRIC_CAP = 24


def build(
    store: Store,
    study: str,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    *,
    keys: Collection[str] | None = None,
    axes: list[str] | None = None,
    directions: dict[str, int] | None = None,
    pool: Sequence[str] = (),
) -> Summary:
    """Load and summarize; without --metric, the default set (see default_metrics) capped with a note."""
    loaded = load(store, study, metrics or None, analysis=False, keys=keys, axes=axes)
    loaded.directions = {**(directions or {}), **loaded.directions}  # a search's own metric first
    notes = []
    if not metrics:
        chosen, dropped = default_metrics(loaded.metrics, DEFAULT_METRIC_CAP)
        if dropped:
            notes.append(
                f"showing {len(chosen)} of {len(chosen) + dropped} metrics; choose with --metric GLOB"
            )
        loaded.metrics = chosen
    summary = summarize(loaded, rows, cols, pool)
    summary.notes = notes + summary.notes
    return summary
