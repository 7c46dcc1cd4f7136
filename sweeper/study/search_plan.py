"""A search study's plan: its space checked against base and the axes, its groups, its grid, the cell
each trial starts from, and its final seeds. optuna is imported only to check sampler options."""

from __future__ import annotations

import math
from typing import Any

from sweeper.errors import did_you_mean
from sweeper.study.axes import CONFIG_PATH, check_path, parse_seeds
from sweeper.study.config import SEED_AXIS, canonical
from sweeper.study.expanded import TRIAL_LABEL, Axis, Cell, SearchPlan
from sweeper.study.problems import Problems
from sweeper.study.schema import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    Search,
    StudyFile,
)


def search_plan(
    p: Problems, study: StudyFile, spec: Search, base: dict, axes: list[Axis], templates: list[Cell]
) -> SearchPlan:
    names = [a.name for a in axes]
    if TRIAL_LABEL in names:
        p.add(f"axes.{TRIAL_LABEL}", f"'{TRIAL_LABEL}' numbers a search's trials; rename this axis")
    group_axes = names if spec.group_by is None else spec.group_by
    for i, name in enumerate(group_axes if spec.group_by is not None else []):
        if name not in names:
            hint = did_you_mean(name, names)
            p.add(f"search.group_by[{i}]", f"unknown axis{hint}; axes are: {', '.join(names) or 'none'}")
    params: dict[str, Param] = {}
    for raw, param in spec.space.items():
        where, path = f"search.space.{raw}", raw.lstrip("+")
        if not CONFIG_PATH.fullmatch(path):
            p.add(where, "expected a dotted config path such as 'train.lr'")
            continue
        clash = [n for n in names if n == path or n.startswith(path + ".") or path.startswith(n + ".")]
        if clash or path == SEED_AXIS:
            p.add(
                where,
                f"'{path}' is set by the axis '{(clash or [SEED_AXIS])[0]}'; search it or vary it, not both",
            )
            continue
        check_path(p, base, path, where, raw.startswith("+"))
        params[path] = param
    searched = [a for a in axes if a.name not in group_axes]
    grid_values = grid(p, params, searched) if spec.sampler == "grid" else None
    if spec.sampler_options:
        check_sampler_options(p, spec)
    chosen_final_seeds = final_seeds(p, spec.final_seeds, {t.seed for t in templates})
    executor = study.executor
    if spec.pruner is not None and executor.kind == "debug":
        p.warnings.append(
            f"{p.file}: search.pruner: the debug executor runs each trial to its end in this "
            "process, so nothing is pruned; use the local or slurm executor"
        )
    parallel = (
        spec.parallel or {"debug": 1, "local": getattr(executor, "parallelism", 1), "slurm": 8}[executor.kind]
    )
    groups: dict[str, dict] = {}
    by_labels = {}
    for cell in templates:
        axis_labels = {k: v for k, v in cell.labels.items() if k != SEED_AXIS}
        by_labels[canonical(axis_labels)] = cell
        group = {a: axis_labels[a] for a in group_axes if a in axis_labels}
        groups.setdefault(canonical(group), group)
    if searched and len(by_labels) != len(groups) * math.prod(len(a.labels) for a in searched):
        shown = ", ".join(a.name for a in searched)
        p.add(
            "search.group_by",
            f"include/exclude rules remove some combinations of the searched "
            f"axes ({shown}) in some group; add those axes to group_by",
        )
    return SearchPlan(
        spec,
        params,
        [a for a in group_axes if a in names],
        searched,
        groups,
        by_labels,
        chosen_final_seeds,
        parallel,
        grid_values,
    )


def final_seeds(p: Problems, raw: Any, used: set[int]) -> list[int]:
    """Seeds the trials did not run with: the final repeats are fresh runs, so the best-of-N value the
    selection saw never counts in their mean. A count takes the first integers not used."""
    if raw is None:
        return []
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return [s for s in range(raw + len(used)) if s not in used][:raw]
    chosen = parse_seeds(p, raw, "search.final_seeds")
    if clash := sorted(used & set(chosen)):
        shown = ", ".join(map(str, clash))
        p.add(
            "search.final_seeds",
            f"seed {shown} is the seed the trials run with; "
            "the final repeats must be fresh runs (a count picks unused seeds)",
        )
    return chosen


def grid(p: Problems, params: dict[str, Param], searched: list[Axis]) -> dict[str, list]:
    """The grid sampler's values: categorical choices, int ranges, and floats with a step."""
    out: dict[str, list] = {a.name: [as_choice(label) for label in a.labels] for a in searched}
    for path, param in params.items():
        if isinstance(param, CategoricalParam):
            out[path] = list(param.choices)
        elif isinstance(param, IntParam) and not param.log:
            out[path] = list(range(param.low, param.high + 1, param.step))
        elif isinstance(param, FloatParam) and param.step is not None:
            n = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
            out[path] = [round(param.low + i * param.step, 12) for i in range(n)]
        else:
            p.add(
                f"search.space.{path}",
                "the grid sampler needs categorical choices, an int range, or a float with a step",
            )
    return out


def check_sampler_options(p: Problems, spec: Search) -> None:
    """Options must be keyword arguments of the optuna sampler (seed and the grid are set by sweeper)."""
    import inspect

    accepted = [
        name
        for name in inspect.signature(sampler_class(spec.sampler)).parameters
        if name not in ("seed", "search_space")
    ]
    for key in spec.sampler_options:
        if key not in accepted:
            p.add(
                f"search.sampler_options.{key}",
                f"not an option of the {spec.sampler} sampler{did_you_mean(key, accepted)}; "
                f"options: {', '.join(accepted)}",
            )


def sampler_class(name: str) -> type:
    """The optuna sampler a study names (optuna is imported here, when a search needs it)."""
    import optuna

    return {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }[name]


def as_choice(label: Any) -> Any:
    """An axis label as an optuna categorical choice (which must be a scalar)."""
    return canonical(label) if isinstance(label, list | dict) else label
