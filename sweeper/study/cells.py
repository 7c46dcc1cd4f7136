"""A study's cells: every combination of its factors and seeds that the rules keep, with its config,
key and resources; and the check of those resources against the executor.

A cell's key hashes the task and the fully resolved config only, so resources, executor
settings, axis names and key order never change it, and an edited study re-uses every
cell whose config it still produces.
"""

from __future__ import annotations

import itertools
import math

from sweeper.study.config import SEED_AXIS, canonical, cell_key, set_path
from sweeper.study.expanded import Axis, Cell
from sweeper.study.problems import Problems
from sweeper.study.rules import matches
from sweeper.study.schema import StudyFile

Rule = dict[str, set[str]]


def build_cells(
    p: Problems,
    spec: StudyFile,
    base: dict,
    factors: list[list[Axis]],
    seeds: list[int],
    include: list[Rule],
    exclude: list[Rule],
    overrides: list[tuple[Rule, dict]],
) -> list[Cell]:
    task = spec.task
    default_resources = spec.resources.default.resolved()
    # Per factor entry: (labels, canonical labels, path updates), precomputed once.
    choices = []
    for factor in factors:
        entries = []
        for i in range(len(factor[0].values)):
            labels = {a.name: a.labels[i] for a in factor}
            entries.append(
                (
                    labels,
                    {n: canonical(v) for n, v in labels.items()},
                    [(a.parts, a.values[i]) for a in factor],
                )
            )
        choices.append(entries)
    choices.append([({SEED_AXIS: s}, {SEED_AXIS: canonical(s)}, [((SEED_AXIS,), s)]) for s in seeds])

    include_hits = [0] * len(include)
    exclude_hits = [0] * len(exclude)
    exclude_first = [0] * len(exclude)  # cells a rule is the first to exclude
    out: list[Cell] = []
    origin: dict[str, dict] = {}
    for combo in itertools.product(*choices):
        canon = {k: v for entry in combo for k, v in entry[1].items()}
        if include:
            hit = [matches(r, canon) for r in include]
            for i, h in enumerate(hit):
                include_hits[i] += h
            if not any(hit):
                continue
        hit = [matches(r, canon) for r in exclude]
        if any(hit):
            for i, h in enumerate(hit):
                exclude_hits[i] += h
            exclude_first[hit.index(True)] += 1
            continue
        labels = {k: v for entry in combo for k, v in entry[0].items()}
        config = base
        for entry in combo:
            for parts, value in entry[2]:
                config = set_path(config, parts, value)
        key = cell_key(task, config)
        if key in origin:
            p.add(
                "axes",
                f"cells {_fmt(origin[key])} and {_fmt(labels)} resolve to the same config; make "
                "the variants differ",
            )
            if len(p.found) > 5:
                break
            continue
        origin[key] = labels
        resources = dict(default_resources)
        for rule, values in overrides:
            if matches(rule, canon):
                resources.update(values)
        out.append(Cell(key, config, labels, labels[SEED_AXIS], resources))
    for kind, hits in (("include", include_hits), ("exclude", exclude_hits)):
        for i, n in enumerate(hits):
            if n == 0:
                p.warnings.append(f"{p.file}: {kind}[{i}]: matches no cell")
            elif kind == "exclude" and exclude_first[i] == 0:
                p.warnings.append(f"{p.file}: exclude[{i}]: excludes nothing that earlier rules do not")
    if not out and not p.found:
        p.add("", "the study has no cells (every combination is excluded)")
    return out


def check_signal_delay(p: Problems, spec: StudyFile, cells: list[Cell]) -> None:
    """SLURM signals a job signal_delay_s before its time limit: at or past the limit, a job would be
    told to save and requeue as it starts, until submitit gives up."""
    executor = spec.executor
    if executor.kind != "slurm":
        return
    used = {c.resources.get("timeout_min") for c in cells}
    sources = [("resources.default.timeout_min", spec.resources.default.timeout_min)] + [
        (f"resources.overrides[{i}].set.timeout_min", o.set.timeout_min)
        for i, o in enumerate(spec.resources.overrides)
        if o.set.timeout_min is not None
    ]
    for where, minutes in sources:
        if minutes not in used:
            continue
        # as the job is submitted: whole minutes (60 when unset), times the cells packed in it
        limit_s = 60 * math.ceil(minutes or 60) * executor.cells_per_job
        if executor.signal_delay_s >= limit_s:
            p.add(
                "executor.signal_delay_s",
                f"{executor.signal_delay_s} s is not less than the job's time limit of {limit_s} s "
                f"({where}: {minutes if minutes is not None else 'unset, 60'}"
                + (f" x cells_per_job {executor.cells_per_job}" if executor.cells_per_job > 1 else "")
                + f"); lower executor.signal_delay_s or raise {where}",
            )


def _fmt(labels: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in labels.items()) + "}"
