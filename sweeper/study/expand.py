"""The expanded study: axes, rules and seeds resolved into content-addressed cells (or a search's plan).

A cell's key hashes the task and the fully resolved config only, so resources, executor
settings, axis names and key order never change it, and an edited study re-uses every
cell whose config it still produces.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from sweeper.errors import SpecError, did_you_mean
from sweeper.study.config import (
    SEED_AXIS,
    canonical,
    cell_key,
    expand_dotted,
    join_path,
    set_path,
)
from sweeper.study.loading import load_yaml
from sweeper.study.problems import pydantic_problems
from sweeper.study.schema import (
    CategoricalParam,
    DebugExecutor,
    FloatParam,
    IntParam,
    LocalExecutor,
    Param,
    Report,
    Retry,
    Search,
    SlurmExecutor,
    StudyFile,
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


def load_study(path: str | Path) -> Study:
    """Load, validate and expand a study file; raise SpecError naming every problem."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(file, [("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, [("", f"cannot read: {e}")]) from None
    return parse_study(text, file)


def study_name(study: str) -> str:
    """A study is named by its name, or by its file (whose `study:` key is read)."""
    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        return load_study(study).name
    return study


def parse_study(text: str, file: str = "<study>", *, cells: bool = True) -> Study:
    """Validate and expand a study's text. cells=False reads its axes, baseline and settings without
    making its cells (nor a search's plan): what a report of a recorded study needs, at a fraction
    of the cost for 10,000 cells."""
    raw = load_yaml(text, file)
    if not isinstance(raw, dict):
        raise SpecError(file, [("", "expected a mapping with keys study, task, base, axes, …")])
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as e:
        raise SpecError(file, pydantic_problems(e)) from None
    return _Expander(spec, file, text, raw).study(cells)


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


class _Expander:
    """Resolves axes against base, applies rules, and builds the cells of one study file."""

    def __init__(self, spec: StudyFile, file: str, text: str, raw: dict):
        self.spec, self.file, self.text, self.raw = spec, file, text, raw
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def fail_if_problems(self) -> None:
        if self.problems:
            raise SpecError(self.file, self.problems)

    def study(self, expand: bool = True) -> Study:
        spec = self.spec
        base = expand_dotted(spec.base, "base", self.problems)
        if SEED_AXIS in base:
            self.problems.append(
                ("base.seed", "the seed is set by the top-level 'seeds' key; remove it from base")
            )
        seeds = self.seeds(spec.seeds)
        factors = self.factors(base)
        self.fail_if_problems()
        axes = [axis for factor in factors for axis in factor]
        seed_axis = Axis(SEED_AXIS, tuple(seeds), tuple(seeds), named=False)
        include = [self.rule(r, f"include[{i}]", axes + [seed_axis]) for i, r in enumerate(spec.include)]
        exclude = [self.rule(r, f"exclude[{i}]", axes + [seed_axis]) for i, r in enumerate(spec.exclude)]
        overrides = [
            (self.rule(o.when, f"resources.overrides[{i}].when", axes + [seed_axis]), o.set.resolved())
            for i, o in enumerate(spec.resources.overrides)
        ]
        baseline = self.baseline(axes)
        if spec.search and len(seeds) > 1:
            self.problems.append(
                (
                    "seeds",
                    "a search runs each trial with one seed; repeat the best configuration "
                    "with search.final_seeds instead",
                )
            )
        self.fail_if_problems()
        cells = self.cells(base, factors, seeds, include, exclude, overrides) if expand else []
        self.signal_delay(cells)
        self.fail_if_problems()
        search = None
        if spec.search and expand:
            search = self.search(spec.search, base, axes, cells)
            self.fail_if_problems()
            cells = []
        return Study(
            name=spec.study,
            description=spec.description,
            task=spec.task,
            check=spec.check,
            file=self.file,
            text=self.text,
            spec_hash=hashlib.sha256(canonical(self.raw).encode()).hexdigest()[:16],
            axes=axes,
            seeds=seeds,
            cells=cells,
            baseline=baseline,
            executor=spec.executor,
            retry=spec.retry,
            workdir=spec.workdir,
            search=search,
            warnings=self.warnings,
            rehearse=spec.rehearse,
            report=spec.report,
        )

    def seeds(self, raw: Any, where: str = "seeds") -> list[int]:
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            return list(range(raw))
        if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
            if len(set(raw)) != len(raw):
                self.problems.append((where, f"duplicate seeds in {raw}"))
            return raw
        self.problems.append((where, f"expected a count >= 1 or a non-empty list of integers, got {raw!r}"))
        return []

    def final_seeds(self, raw: Any, used: set[int]) -> list[int]:
        """Seeds the trials did not run with: the final repeats are fresh runs, so the best-of-N value the
        selection saw never counts in their mean. A count takes the first integers not used."""
        if raw is None:
            return []
        if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            return [s for s in range(raw + len(used)) if s not in used][:raw]
        seeds = self.seeds(raw, "search.final_seeds")
        if clash := sorted(used & set(seeds)):
            shown = ", ".join(map(str, clash))
            self.problems.append(
                (
                    "search.final_seeds",
                    f"seed {shown} is the seed the trials run with; "
                    "the final repeats must be fresh runs (a count picks unused seeds)",
                )
            )
        return seeds

    # -- axes

    def factors(self, base: dict) -> list[list[Axis]]:
        """Each factor varies on its own; a zip group is one factor of several axes."""
        factors: list[list[Axis]] = []
        for name, values in self.spec.axes.items():
            if name == "zip":
                groups = values if isinstance(values, list) else [values]
                for g, group in enumerate(groups):
                    where = f"axes.zip[{g}]"
                    if not isinstance(group, dict) or len(group) < 2:
                        self.problems.append(
                            (where, "expected a mapping of two or more axes that vary together")
                        )
                        continue
                    found = [self.axis(n, v, f"{where}.{n}", base) for n, v in group.items()]
                    zipped = [a for a in found if a]
                    if len({len(a.values) for a in zipped}) > 1:
                        lengths = ", ".join(f"{a.name}: {len(a.values)}" for a in zipped)
                        self.problems.append(
                            (where, f"zipped axes need the same number of values ({lengths})")
                        )
                    factors.append(zipped)
            else:
                axis = self.axis(name, values, f"axes.{name}", base)
                if axis:
                    factors.append([axis])
        names = [a.name for f in factors for a in f]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            self.problems.append((f"axes.{dup}", "this axis is declared more than once"))
        return factors

    def axis(self, raw_name: str, values: Any, where: str, base: dict) -> Axis | None:
        declared_new = raw_name.startswith("+")
        name = raw_name.lstrip("+")
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", name):
            self.problems.append((where, "expected a dotted config path such as 'model.scale'"))
            return None
        if name == SEED_AXIS:
            self.problems.append((where, "'seed' is reserved; use the top-level 'seeds' key"))
            return None
        if isinstance(values, list):
            if not values:
                self.problems.append((where, "empty axis; expected at least one value"))
                return None
            seen = [canonical(v) for v in values]
            dups = sorted({s for s in seen if seen.count(s) > 1})
            if dups:
                self.problems.append((where, f"duplicate values {', '.join(dups)}"))
            self.check_path(base, name, where, declared_new)
            return Axis(name, tuple(values), tuple(values), named=False)
        if isinstance(values, dict):
            if not values:
                self.problems.append((where, "empty axis; expected at least one named variant"))
                return None
            variants = {str(k): v for k, v in values.items()}
            resolved = []
            for label, sub in variants.items():
                sub = {} if sub is None else sub
                if isinstance(sub, dict):
                    sub = expand_dotted(sub, f"{where}.{label}", self.problems)
                    for leaf in _leaf_paths(sub):
                        self.check_path(base, join_path(name, leaf), f"{where}.{label}.{leaf}", declared_new)
                else:
                    self.check_path(base, name, f"{where}.{label}", declared_new)
                resolved.append(sub)
            return Axis(name, tuple(variants), tuple(resolved), named=True)
        self.problems.append(
            (where, f"expected a list of values or a mapping of named variants, got {values!r}")
        )
        return None

    def check_path(self, base: dict, path: str, where: str, declared_new: bool) -> None:
        """A path must exist in base, or lie under an empty mapping, or be declared new with '+'."""
        node: Any = base
        parts = path.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                prefix = ".".join(parts[:i])
                self.problems.append((where, f"'{prefix}' is a {type(node).__name__} in base, not a mapping"))
                return
            if part not in node:
                if declared_new or not node:
                    return
                prefix = ".".join(parts[:i])
                siblings = [join_path(prefix, k) for k in node]
                hint = did_you_mean(join_path(prefix, part), siblings)
                self.problems.append(
                    (
                        where,
                        f"'{path}' is not in base{hint}; add it to base, or write '+{path}' to declare a "
                        "new key",
                    )
                )
                return
            node = node[part]

    # -- search

    def search(self, spec: Search, base: dict, axes: list[Axis], templates: list[Cell]) -> SearchPlan:
        names = [a.name for a in axes]
        if TRIAL_LABEL in names:
            self.problems.append(
                (f"axes.{TRIAL_LABEL}", f"'{TRIAL_LABEL}' numbers a search's trials; rename this axis")
            )
        group_axes = names if spec.group_by is None else spec.group_by
        for i, name in enumerate(group_axes if spec.group_by is not None else []):
            if name not in names:
                hint = did_you_mean(name, names)
                self.problems.append(
                    (f"search.group_by[{i}]", f"unknown axis{hint}; axes are: {', '.join(names) or 'none'}")
                )
        params: dict[str, Param] = {}
        for raw, param in spec.space.items():
            where, path = f"search.space.{raw}", raw.lstrip("+")
            if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", path):
                self.problems.append((where, "expected a dotted config path such as 'train.lr'"))
                continue
            clash = [n for n in names if n == path or n.startswith(path + ".") or path.startswith(n + ".")]
            if clash or path == SEED_AXIS:
                self.problems.append(
                    (
                        where,
                        f"'{path}' is set by the axis '{(clash or [SEED_AXIS])[0]}'; search it or vary it, "
                        "not both",
                    )
                )
                continue
            self.check_path(base, path, where, raw.startswith("+"))
            params[path] = param
        searched = [a for a in axes if a.name not in group_axes]
        grid = self.grid(params, searched) if spec.sampler == "grid" else None
        if spec.sampler_options:
            self.sampler_options(spec)
        final_seeds = self.final_seeds(spec.final_seeds, {t.seed for t in templates})
        executor = self.spec.executor
        if spec.pruner is not None and executor.kind == "debug":
            self.warnings.append(
                f"{self.file}: search.pruner: the debug executor runs each trial to its end in this "
                "process, so nothing is pruned; use the local or slurm executor"
            )
        parallel = (
            spec.parallel
            or {"debug": 1, "local": getattr(executor, "parallelism", 1), "slurm": 8}[executor.kind]
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
            self.problems.append(
                (
                    "search.group_by",
                    f"include/exclude rules remove some combinations of the searched "
                    f"axes ({shown}) in some group; add those axes to group_by",
                )
            )
        return SearchPlan(
            spec,
            params,
            [a for a in group_axes if a in names],
            searched,
            groups,
            by_labels,
            final_seeds,
            parallel,
            grid,
        )

    def grid(self, params: dict[str, Param], searched: list[Axis]) -> dict[str, list]:
        """The grid sampler's values: categorical choices, int ranges, and floats with a step."""
        grid: dict[str, list] = {a.name: [as_choice(label) for label in a.labels] for a in searched}
        for path, p in params.items():
            if isinstance(p, CategoricalParam):
                grid[path] = list(p.choices)
            elif isinstance(p, IntParam) and not p.log:
                grid[path] = list(range(p.low, p.high + 1, p.step))
            elif isinstance(p, FloatParam) and p.step is not None:
                n = int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
                grid[path] = [round(p.low + i * p.step, 12) for i in range(n)]
            else:
                self.problems.append(
                    (
                        f"search.space.{path}",
                        "the grid sampler needs categorical choices, an int range, or a float with a step",
                    )
                )
        return grid

    def sampler_options(self, spec: Search) -> None:
        """Options must be keyword arguments of the optuna sampler (seed and the grid are set by sweeper)."""
        import inspect

        accepted = [
            p
            for p in inspect.signature(sampler_class(spec.sampler)).parameters
            if p not in ("seed", "search_space")
        ]
        for key in spec.sampler_options:
            if key not in accepted:
                self.problems.append(
                    (
                        f"search.sampler_options.{key}",
                        f"not an option of the {spec.sampler} sampler{did_you_mean(key, accepted)}; "
                        f"options: {', '.join(accepted)}",
                    )
                )

    # -- rules

    def rule(self, rule: dict, where: str, axes: list[Axis]) -> dict[str, set[str]]:
        """A rule maps axis names to a label or a list of labels; returns canonical label sets."""
        by_name = {a.name: a for a in axes}
        out: dict[str, set[str]] = {}
        if not rule:
            self.problems.append((where, "empty rule; expected axis: value pairs"))
        for name, wanted in rule.items():
            axis = by_name.get(name)
            if axis is None:
                hint = did_you_mean(name, by_name)
                self.problems.append(
                    (f"{where}.{name}", f"unknown axis{hint}; axes are: {', '.join(by_name)}")
                )
                continue
            known = {canonical(label) for label in axis.labels}
            alternatives = wanted if isinstance(wanted, list) and canonical(wanted) not in known else [wanted]
            for w in alternatives:
                if canonical(w) not in known:
                    hint = did_you_mean(str(w), map(str, axis.labels))
                    shown = ", ".join(map(str, axis.labels))
                    self.problems.append(
                        (
                            f"{where}.{name}",
                            f"{w!r} is not a value of this axis{hint}; expected one of: {shown}",
                        )
                    )
            out[name] = {canonical(w) for w in alternatives}
        return out

    def baseline(self, axes: list[Axis]) -> dict | None:
        """The labels of the reference variant; the report pairs every other variant with it."""
        raw = self.spec.baseline
        if raw is None:
            return None
        if not isinstance(raw, str | dict):
            self.problems.append(
                ("baseline", f"expected a variant name or a mapping axis: value, got {raw!r}")
            )
            return None
        if isinstance(raw, str):
            named = [a for a in axes if a.named]
            if len(named) != 1:
                self.problems.append(
                    (
                        "baseline",
                        f"a bare variant name needs exactly one named-variants axis (found {len(named)}); "
                        f"write baseline: {{axis: variant}}",
                    )
                )
                return None
            raw = {named[0].name: raw}
        for name, labels in self.rule(raw, "baseline", axes).items():
            if len(labels) != 1:
                self.problems.append((f"baseline.{name}", "expected a single value, not a list"))
        return raw

    # -- cells

    def cells(self, base, factors, seeds, include, exclude, overrides) -> list[Cell]:
        task = self.spec.task
        default_resources = self.spec.resources.default.resolved()
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

        def matches(rule: dict[str, set[str]], canon: dict[str, str]) -> bool:
            return all(canon[name] in wanted for name, wanted in rule.items())

        include_hits = [0] * len(include)
        exclude_hits = [0] * len(exclude)
        exclude_first = [0] * len(exclude)  # cells a rule is the first to exclude
        cells: list[Cell] = []
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
                self.problems.append(
                    (
                        "axes",
                        f"cells {_fmt(origin[key])} and {_fmt(labels)} resolve to the same config; make "
                        "the variants differ",
                    )
                )
                if len(self.problems) > 5:
                    break
                continue
            origin[key] = labels
            resources = dict(default_resources)
            for rule, values in overrides:
                if matches(rule, canon):
                    resources.update(values)
            cells.append(Cell(key, config, labels, labels[SEED_AXIS], resources))
        for kind, hits in (("include", include_hits), ("exclude", exclude_hits)):
            for i, n in enumerate(hits):
                if n == 0:
                    self.warnings.append(f"{self.file}: {kind}[{i}]: matches no cell")
                elif kind == "exclude" and exclude_first[i] == 0:
                    self.warnings.append(
                        f"{self.file}: exclude[{i}]: excludes nothing that earlier rules do not"
                    )
        if not cells and not self.problems:
            self.problems.append(("", "the study has no cells (every combination is excluded)"))
        return cells

    def signal_delay(self, cells: list[Cell]) -> None:
        """SLURM signals a job signal_delay_s before its time limit: at or past the limit, a job would be
        told to save and requeue as it starts, until submitit gives up."""
        executor = self.spec.executor
        if executor.kind != "slurm":
            return
        used = {c.resources.get("timeout_min") for c in cells}
        sources = [("resources.default.timeout_min", self.spec.resources.default.timeout_min)] + [
            (f"resources.overrides[{i}].set.timeout_min", o.set.timeout_min)
            for i, o in enumerate(self.spec.resources.overrides)
            if o.set.timeout_min is not None
        ]
        for where, minutes in sources:
            if minutes not in used:
                continue
            # as the job is submitted: whole minutes (60 when unset), times the cells packed in it
            limit_s = 60 * math.ceil(minutes or 60) * executor.cells_per_job
            if executor.signal_delay_s >= limit_s:
                self.problems.append(
                    (
                        "executor.signal_delay_s",
                        (
                            f"{executor.signal_delay_s} s is not less than the job's time limit of "
                            f"{limit_s} s "
                            f"({where}: {minutes if minutes is not None else 'unset, 60'}"
                            + (
                                f" x cells_per_job {executor.cells_per_job}"
                                if executor.cells_per_job > 1
                                else ""
                            )
                            + f"); lower executor.signal_delay_s or raise {where}"
                        ),
                    )
                )


def as_choice(label: Any) -> Any:
    """An axis label as an optuna categorical choice (which must be a scalar)."""
    return canonical(label) if isinstance(label, list | dict) else label


def _leaf_paths(mapping: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in mapping.items():
        path = join_path(prefix, str(k))
        out.extend(_leaf_paths(v, path) if isinstance(v, dict) and v else [path])
    return out


def _fmt(labels: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in labels.items()) + "}"
