"""Training curves: every value a task reported with `ctx.report(step, …)`, one curve per cell
and metric, and their mean over seeds with a band, on steps aligned across seeds.

The store keeps each attempt's reported values (column `attempt`); a resumed attempt redoes the
steps after its checkpoint, so its values supersede the earlier attempts' from its first step
on, and a resumed cell's curve is one curve.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fnmatch import fnmatchcase
from operator import itemgetter

import numpy as np
import pandas as pd

from sweeper.errors import UserError, did_you_mean
from sweeper.report.load import _column, study_meta
from sweeper.report.statistics import t_quantile
from sweeper.store import Store
from sweeper.study import SEED_AXIS

STEP = "step"


def supersede(rows: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (cell, metric) and step, the value of the latest attempt that covers it.

    An attempt's values stop where a later attempt's first step of that metric begins (the
    later attempt redid those steps). `rows` has columns key, metric, attempt, step, value.
    """
    if rows["attempt"].nunique() < 2:  # nothing resumed
        return rows
    by = ["key", "metric"]
    first = rows.groupby([*by, "attempt"], sort=True, observed=True)["step"].min().reset_index()
    first = first.iloc[::-1]  # latest attempt first: the cumulative min of later attempts' first steps
    first["cut"] = first.groupby(by, sort=False, observed=True)["step"].cummin()
    first["cut"] = first.groupby(by, sort=False, observed=True)["cut"].shift()
    merged = rows.merge(first[[*by, "attempt", "cut"]], on=[*by, "attempt"], how="left")
    kept = merged[merged["cut"].isna() | (merged["step"] < merged["cut"])]
    return kept.drop(columns="cut").reset_index(drop=True)


def load_curves(
    store: Store, study: str, patterns: Sequence[str] | None = None, *, flag: str = "--y"
) -> tuple[pd.DataFrame, list[str]]:
    """(one row per cell, metric and step: key, axes…, seed, state, metric, step, value; the axes).

    Every live cell counts, running ones too (a curve is worth seeing before the cell ends).
    `patterns` are metric globs, pushed into SQL as LIKE filters; one matching nothing is a
    UserError naming `flag`.
    """
    row = store.study_row(study)
    file_axes = study_meta(row.spec_text, row.file)[0]
    members = store.members(row.id)
    raw = store.metric_values(row.id, patterns, final=False)
    # Plain columns from the cursor's tuples; the cell as its position, the metric as a category.
    rows = pd.DataFrame(
        {
            "key": np.fromiter(map(itemgetter(0), raw), dtype=np.int64, count=len(raw)),
            "attempt": np.fromiter(map(itemgetter(1), raw), dtype=np.int64, count=len(raw)),
            "metric": pd.Categorical(list(map(itemgetter(2), raw))),
            STEP: np.fromiter(map(itemgetter(3), raw), dtype=np.int64, count=len(raw)),
            "value": np.fromiter(map(itemgetter(4), raw), dtype=float, count=len(raw)),
        }
    )
    names = sorted(rows["metric"].cat.categories)
    if patterns:
        for p in patterns:
            if not any(fnmatchcase(n, p) for n in names):
                names = reported_names(store, study)
                raise UserError(
                    f"{flag} {p}: matches no reported (per-step) metric of study '{study}'"
                    f"{did_you_mean(p, names)}; reported: {', '.join(names[:12]) or 'none yet'}"
                )
        wanted = [n for n in names if any(fnmatchcase(n, p) for p in patterns)]
        rows = rows[rows["metric"].isin(wanted)]
    rows = supersede(rows)
    rows = rows.assign(metric=rows["metric"].astype(str)).sort_values(["key", "metric", STEP], kind="stable")
    labels = json.loads("[" + ",".join(m[2] for m in members) + "]")
    axes = file_axes + [a for a in (labels[0] if labels else {}) if a not in file_axes and a != SEED_AXIS]
    cells = pd.DataFrame(
        {
            "key": [m[1] for m in members],
            **{a: _column([lab.get(a) for lab in labels]) for a in axes},
            SEED_AXIS: [lab.get(SEED_AXIS) for lab in labels],
            "state": [m[3] for m in members],
        },
        index=[m[0] for m in members],
    )
    frame = cells.loc[rows["key"].to_numpy()].reset_index(drop=True)
    for column in ("metric", STEP, "value"):
        frame[column] = rows[column].to_numpy()
    return frame, axes


def reported_names(store: Store, study: str) -> list[str]:
    """The names of the metrics the study's cells reported per step (what curves can show)."""
    return store.metric_names(store.study_row(study).id, final=False)


def step_counts(store: Store, study: str, sample: int = 20) -> dict[str, int]:
    """Per metric reported per step, how many steps a cell reported at most, over the first `sample`
    cells that reported anything: a curve (many) from a value reported once at the end (one),
    without reading a large study's millions of values."""
    return store.step_counts(store.study_row(study).id, sample)


def aligned(frame: pd.DataFrame, series: list[str]) -> pd.DataFrame:
    """Mean, std and n over cells per (series…, step), each cell's curve linearly interpolated at
    the steps the other cells of its series report (within its own range: never extrapolated).

    Seeds logging at the same steps are averaged as they are; a seed logging at other steps (a
    different log interval, a resumed run) is read at the common steps instead of being dropped.
    """
    out = []
    for name, part in frame.groupby(series, sort=False) if series else [((), frame)]:
        grid = part.pivot_table(index="key", columns=STEP, values="value", aggfunc="last", observed=True)
        grid = grid.interpolate(method="index", axis=1, limit_area="inside")
        stats = pd.DataFrame({"mean": grid.mean(), "std": grid.std(ddof=1), "n": grid.count()})
        for col, value in zip(series, name if isinstance(name, tuple) else (name,), strict=True):
            stats.insert(0, col, value)
        out.append(stats.reset_index())
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def band(data: pd.DataFrame, ci: bool) -> pd.Series:
    """The band's half-width: the std over seeds, or the 95 % t interval of the mean; 0 for one seed."""
    if ci:
        half = t_quantile(data["n"].to_numpy()) * data["std"] / np.sqrt(data["n"])
    else:
        half = data["std"]
    return half.fillna(0.0)
