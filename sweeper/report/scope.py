"""A search study's report scope: the recorded study with its search, and its final-seed cells."""

from __future__ import annotations

from sweeper.errors import UserError
from sweeper.store import Store
from sweeper.study import (
    Study,
    load_yaml,
    parse_study,
)


def search_study(store: Store, name: str) -> Study | None:
    """The recorded study, expanded, when it has a search (a plain study is never re-expanded)."""
    row = store.study_row(name)
    if "search" not in (load_yaml(row.spec_text, row.file) or {}):
        return None
    study = parse_study(row.spec_text, row.file)
    study.workdir = store.workdir(study)
    return study


def final_scope(
    store: Store, study: Study, groups: list | None = None, *, required: bool
) -> tuple[list[str], list[str], dict[str, int]]:
    """A search's ablation view: its final-seed cells, its group axes, and its metric's direction.

    `groups` are `sweeper.search.results` when the caller has them already.
    """
    from sweeper.search import results

    keys = [k for g in (groups if groups is not None else results(store, study)) for k in g.finals]
    if not keys and required and not study.search_plan.final_seeds:
        raise UserError(
            f"study '{study.name}' searches without final seeds: set search.final_seeds to repeat each "
            f"group's best configuration (`sweeper report {study.name}` shows the trials)"
        )
    if not keys and required:
        raise UserError(
            f"study '{study.name}' has no final-seed cells yet: they are made once a group has spent its "
            "trials"
        )
    spec = study.search_plan.spec
    return keys, study.search_plan.group_axes, {spec.metric: 1 if spec.direction == "maximize" else -1}
