"""The expanded study as data: its axes, its content-addressed cells, a search's plan.

What the rest of sweeper reads of a study; made by sweeper.study.expand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sweeper.study.config import SEED_AXIS, canonical
from sweeper.study.schema import (
    DebugExecutor,
    LocalExecutor,
    Param,
    Report,
    Retry,
    Search,
    SlurmExecutor,
)


@dataclass(frozen=True)
class Axis:
    name: str  # the config path, without the '+' that declares it new
    labels: tuple[Any, ...]  # variant names, or the values themselves
    values: tuple[Any, ...]
    named: bool  # named variants (labels are names) vs a list of values

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))


@dataclass(frozen=True, slots=True)
class Cell:
    key: str
    config: dict
    labels: dict  # axis name -> label, including 'seed'
    seed: int
    resources: dict


TRIAL_LABEL = "trial"  # the label that numbers a search's trials (and names the trial a final cell repeats)


@dataclass(frozen=True)
class SearchPlan:
    """A validated search: its block, its groups, and the cell each trial starts from."""

    spec: Search
    params: dict[str, Param]  # config path -> distribution
    group_axes: list[str]  # one search per combination of these axes' labels
    searched: list[Axis]  # the other axes: a categorical choice of every trial
    groups: dict[str, dict]  # group key -> its labels
    templates: dict[str, Cell]  # canonical axis labels -> the cell (first seed) a trial starts from
    final_seeds: list[int]
    parallel: int
    grid: dict[str, list] | None  # the grid sampler's values per parameter

    @property
    def budget(self) -> int:
        """Trials per group: `trials`, or fewer when a grid has fewer points (a grid never repeats)."""
        if self.grid is None:
            return self.spec.trials
        return min(self.spec.trials, math.prod(len(v) for v in self.grid.values()))

    def template(self, labels: dict) -> Cell | None:
        return self.templates.get(
            canonical({k: v for k, v in labels.items() if k not in (SEED_AXIS, TRIAL_LABEL)})
        )


@dataclass
class Study:
    name: str
    description: str
    task: str
    check: str | None
    file: str
    text: str
    spec_hash: str
    axes: list[Axis]
    seeds: list[int]
    cells: list[Cell]
    baseline: dict | None
    executor: DebugExecutor | LocalExecutor | SlurmExecutor
    retry: Retry
    workdir: str
    search: SearchPlan | None = None  # its cells are the trials recorded in the store (Store.attach)
    warnings: list[str] = field(default_factory=list)
    rehearse: str | None = None  # the task's rehearsal hook (sweeper.run.rehearse)
    report: Report = field(default_factory=Report)

    @property
    def search_plan(self) -> SearchPlan:
        """The search's plan, for code that runs for a search study only."""
        if self.search is None:
            raise ValueError(f"study '{self.name}' has no search")
        return self.search

    @property
    def axis_names(self) -> list[str]:
        return [a.name for a in self.axes] + [SEED_AXIS]
