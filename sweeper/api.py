"""The notebook API: a study's results as a pandas DataFrame, straight from the store."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from sweeper.errors import UserError
from sweeper.report.load import load as _load
from sweeper.store import Store
from sweeper.study import study_name


def load(study: str, db: str | None = None, metrics: str | Sequence[str] | None = None) -> pd.DataFrame:
    """One row per live cell of `study` (a name or its YAML file), in the study file's order.

    Columns: `key`, one per axis (the cell's labels in this study), `seed`, `state`,
    `category` (new / running / done / failed), then one per final metric (NaN where a cell
    has not reported it or has not finished). `metrics` globs restrict the metric columns; `db`
    is a store URL (default: SWEEPER_DB, else sqlite:///results.db).
    """
    patterns = [metrics] if isinstance(metrics, str) else metrics
    with Store(db, create=False) as store:
        return _load(store, study_name(study), patterns).frame


def trials(study: str, db: str | None = None) -> pd.DataFrame:
    """A search study's trials (and final-seed repeats), one row each, in the order they were asked.

    Columns: the group's axes, `kind` (trial | final), `trial` (its number in the group), `seed`,
    one per searched parameter, `state`, the searched metric (NaN until it completes) and `key`.
    """
    from sweeper.report.scope import search_study
    from sweeper.search import trials as search_trials

    with Store(db, create=False) as store:
        found = search_study(store, study_name(study))
        if found is None:
            raise UserError(f"study '{study_name(study)}' has no search block; sweeper.load gives its cells")
        return pd.DataFrame(search_trials(store, found))


def curves(study: str, db: str | None = None, metrics: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Every value the cells of `study` reported during training, one row per (cell, metric, step).

    Columns: `key`, one per axis, `seed`, `state`, `metric`, `step`, `value`. A resumed cell is
    one curve: from the step a later attempt resumed at, its values replace the earlier ones.
    Running cells are included. `metrics` globs restrict the metrics.
    """
    from sweeper.report.curves import load_curves

    patterns = [metrics] if isinstance(metrics, str) else metrics
    with Store(db, create=False) as store:
        return load_curves(store, study_name(study), patterns, flag="metrics")[0]
