"""Loading a study's results: metric directions, and the members x metrics frame, pivoted with numpy
(two store reads, so that a store of 900k metric rows loads in well under a second: benchmarks/report.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from sweeper.errors import UserError, did_you_mean
from sweeper.store import FINISHED, Store, category
from sweeper.study import (
    SEED_AXIS,
    canonical,
    parse_study,
)

# ----------------------------------------------------------------------------- metric direction

# Words of a metric's last name segment (split on '_' and '-', and the segment whole) that say
# which way is better. A lower-is-better word wins ('top1_err'); a rate ('img_per_s') is higher.
LOWER_IS_BETTER = frozenset(
    {
        "loss",
        "losses",
        "nll",
        "ce",
        "xent",
        "crossentropy",
        "err",
        "error",
        "errors",
        "wer",
        "cer",
        "ter",
        "ppl",
        "perplexity",
        "bpd",
        "bpc",
        "rmse",
        "mse",
        "mae",
        "absrel",
        "sqrel",
        "silog",
        "fid",
        "kid",
        "lpips",
        "seconds",
        "secs",
        "sec",
        "ms",
        "minutes",
        "hours",
        "time",
        "duration",
        "latency",
        "runtime",
        "elapsed",
    }
)
HIGHER_IS_BETTER = frozenset(
    {
        "acc",
        "accuracy",
        "top1",
        "top5",
        "miou",
        "iou",
        "map",
        "ap",
        "ap50",
        "ap75",
        "f1",
        "auc",
        "auroc",
        "precision",
        "recall",
        "bleu",
        "rouge",
        "psnr",
        "ssim",
        "dice",
        "delta1",
        "delta2",
        "delta3",
        "d1",
        "throughput",
    }
)
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


def describes_model(metric: str) -> bool:
    return metric.startswith(NEUTRAL_PREFIXES)


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


def study_meta(spec_text: str, file: str) -> tuple[list[str], list[str], dict | None, dict[str, int]]:
    """Axis names, named-variant axes, baseline and declared directions of a recorded study's text
    (read without making its cells: for 10,000 cells that would cost more than the whole report)."""
    study = parse_study(spec_text, file, cells=False)
    directions = {glob: DIRECTION[d] for glob, d in study.report.directions.items()}
    return [a.name for a in study.axes], [a.name for a in study.axes if a.named], study.baseline, directions


def _column(labels: list[Any]) -> list[Any]:
    """Labels are grouped and merged on: list or mapping labels are keyed by their canonical JSON."""
    if {list, dict} & set(map(type, labels)):
        return [canonical(v) if isinstance(v, list | dict) else v for v in labels]
    return labels


def default_metrics(names: Iterable[str], cap: int) -> tuple[list[str], int]:
    """Every final metric but the per-block analysis ones, scores first, then parameters and FLOPs."""
    chosen = sorted(
        (n for n in names if not n.startswith("analysis.")), key=lambda n: (describes_model(n), n)
    )
    return chosen[:cap], max(0, len(chosen) - cap)


def load(
    store: Store,
    study: str,
    patterns: Sequence[str] | None = None,
    *,
    analysis: bool = True,
    keys: Collection[str] | None = None,
    axes: list[str] | None = None,
    flag: str = "--metric",
) -> Loaded:
    """Load a study's live members and the final metrics (step IS NULL) of those finished.

    `patterns` are globs over metric names, pushed into SQL as LIKE filters so only the metrics
    asked for are read; without them every metric is read (but analysis.* when `analysis` is
    false). A glob that matches nothing is a UserError with a did-you-mean. When a final
    metric was recorded twice, the last recorded wins (as in Store.metrics). `keys` keeps only
    those cells and `axes` replaces the study's axes (a search's final-seed cells, by group).
    `flag` is the option the patterns came from, named in that error (`sweeper plot` takes --y).
    """
    row = store.study_row(study)
    file_axes, named, baseline, directions = study_meta(row.spec_text, row.file)
    members = store.members(row.id)
    pivot = _pivot(members, store.metric_values(row.id, patterns, analysis=analysis))
    if pivot is None:  # a final value recorded twice (re-ingested): read again in id order, last wins
        pivot = _pivot(
            members, store.metric_values(row.id, patterns, analysis=analysis, ordered=True), ordered=True
        )
    assert pivot is not None  # read in order: never ambiguous
    matrix, found = pivot
    # Only finished cells' values count: a cell failed on a NaN keeps its finite values in the store only.
    matrix[np.fromiter((m[3] not in FINISHED for m in members), dtype=bool, count=len(members))] = np.nan
    kept = ~np.isnan(matrix).all(axis=0)
    matrix, found = matrix[:, kept], [n for n, k in zip(found, kept, strict=True) if k]

    labels = json.loads("[" + ",".join(m[2] for m in members) + "]")
    all_axes = (
        axes
        if axes is not None
        else (file_axes + [a for a in (labels[0] if labels else {}) if a not in file_axes and a != SEED_AXIS])
    )
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
                raise UserError(
                    f"{flag} {p}: matches no final metric of study '{study}'"
                    f"{did_you_mean(p, known)}; metrics: {shown or 'none recorded yet'}"
                )
            metrics += [n for n in hits if n not in metrics]
    else:
        metrics = sorted(reported, key=lambda n: (describes_model(n), n))
    index = {n: i for i, n in enumerate(found)}
    data = pd.DataFrame(matrix[:, [index[m] for m in metrics]], columns=metrics, index=frame.index)
    frame = pd.concat([frame, data], axis=1)
    if keys is not None:
        frame = frame[frame["key"].isin(set(keys))].reset_index(drop=True)
    return Loaded(study, frame, all_axes, [a for a in named if a in all_axes], baseline, metrics, directions)


def _pivot(
    members: Sequence[tuple], rows: list[tuple], *, ordered: bool = False
) -> tuple[np.ndarray, list[str]] | None:
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
