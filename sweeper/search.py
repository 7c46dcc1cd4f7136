"""Search inside a study: optuna samplers and pruners, driven by ask/tell from the controller.

Every trial is a cell, recorded and keyed like any other, so no result is lost, a config asked
twice runs once, and the report sees every trial. The controller keeps no state of its own:
each step (`grow`, run by `launch`, `resume` and every poll of `--wait`) rebuilds each group's
optuna study from the store — the search rows, the cells' states, their final and intermediate
metrics — then prunes, asks for the free slots and records the new trials, all in one
transaction that holds the study's lock. A controller killed at any point, or two running at
once, therefore lose and repeat nothing, and `sweeper resume` continues the count.

Pruning: the pruner reads what running trials report through `ctx.report` (their
metrics.jsonl); a pruned cell gets a `prune` file, its task stops at its next report, and the
cell ends PRUNED.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.errors import UserError
from sweeper.run.rundir import RunDir
from sweeper.store import ACTIVE, CellState, SearchCell, SearchStep, Store
from sweeper.study import (
    SEED_AXIS,
    TRIAL_LABEL,
    CategoricalParam,
    Cell,
    FloatParam,
    IntParam,
    SearchPlan,
    Study,
    as_choice,
    cell_key,
    sampler_class,
    set_path,
)

if TYPE_CHECKING:
    import optuna

# What a trial's cell state means to optuna (ACTIVE and unsuccessful-but-resumable cells: still running).
_FINAL: dict[str, str] = {
    CellState.COMPLETED: "COMPLETE",
    CellState.PRUNED: "PRUNED",
    CellState.FAILED: "FAIL",
}
_BUSY = ACTIVE | {CellState.PLANNED}


# ----------------------------------------------------------------------------- the study's cells


# ----------------------------------------------------------------------------- one controller step


@dataclass
class Growth:
    """The cells one step recorded."""

    asked: list[str] = field(default_factory=list)  # new trials
    finals: list[str] = field(default_factory=list)  # new final-seed repeats of a group's best


@dataclass
class _Trial:
    row: SearchCell
    state: str  # the cell's
    value: float | None  # the searched metric, final
    steps: dict[int, float]  # the pruner's metric by step, oriented to the search's direction


def grow(store: Store, study: Study, only: dict[str, set[str]] | None = None) -> Growth:
    """Prune running trials, ask for the free slots, record new trials and final repeats.

    Only groups with a slot to fill or a running trial to judge get their optuna study rebuilt,
    so a step costs little once most groups are done. `only` (`--only` filters on the group
    axes) limits the asking to the groups it selects.
    """
    plan = study.search_plan
    growth = Growth()
    workdir = Path(study.workdir).resolve()
    with store.search_step(study.name) as step:
        trials = _outcomes(step, plan, [r for r in step.rows() if r.group_key in plan.groups], workdir)
        by_group: dict[str, list[_Trial]] = {g: [] for g in plan.groups}
        for t in trials:
            by_group[t.row.group_key].append(t)
        tried = {g: [t for t in ts if t.row.kind == "trial"] for g, ts in by_group.items()}
        # A group with a cancelled trial is paused (`sweeper cancel`) until `sweeper resume` runs it again.
        chosen = {
            g
            for g, labels in plan.groups.items()
            if all(str(labels[a]) in values for a, values in (only or {}).items())
            and not any(t.state == CellState.CANCELLED for t in tried[g])
        }
        want = {g: max(0, plan.budget - len(tried[g])) if g in chosen else 0 for g in plan.groups}
        busy = len({t.row.cell_key for t in trials if t.state in _BUSY})
        asks = _share(plan.parallel - busy, want, {g: len(tried[g]) for g in plan.groups})
        judging = plan.spec.pruner is not None
        new: list[tuple[dict, Cell]] = []
        for i, g in enumerate(plan.groups):
            running = judging and any(t.state == CellState.RUNNING and t.steps for t in tried[g])
            if asks.get(g) or running:
                start = max((t.row.number for t in tried[g]), default=-1) + 1
                try:  # the sampler's and pruner's options reach optuna only here
                    ost = _optuna_study(plan, study.name, i, g, tried[g])
                    if running:
                        _prune(step, plan, ost, tried[g], workdir)
                    asked = [
                        _ask(plan, ost, g, number, study) for number in range(start, start + asks.get(g, 0))
                    ]
                except (TypeError, ValueError) as e:
                    raise UserError(
                        f"{study.file}: search.sampler_options: optuna's {plan.spec.sampler} sampler "
                        f"failed with them ({type(e).__name__}: {e}); nothing was recorded"
                    ) from None
                new += asked
                growth.asked += [cell.key for _, cell in asked]
            elif g in chosen and not want[g] and all(t.state in _FINAL for t in tried[g]):
                finals = _finals(step, plan, g, by_group[g])
                new += finals
                growth.finals += [cell.key for _, cell in finals]
        if new:
            cells = {
                cell.key: {
                    "key": cell.key,
                    "task": study.task,
                    "config": cell.config,
                    "seed": cell.seed,
                    "state": CellState.PLANNED,
                }
                for _, cell in new
            }
            step.record(list(cells.values()), [row for row, _ in new])
    known = {c.key for c in study.cells}
    for _, cell in new:  # a config asked twice is one cell
        if cell.key not in known:
            known.add(cell.key)
            study.cells.append(cell)
    return growth


def _share(free: int, want: dict[str, int], have: dict[str, int]) -> dict[str, int]:
    """Each free slot goes to the group with the fewest trials among those with budget left, so
    the groups' searches advance together (first in file order on ties)."""
    asks: dict[str, int] = defaultdict(int)
    for _ in range(max(0, free)):
        open_ = [g for g in want if asks[g] < want[g]]
        if not open_:
            break
        asks[min(open_, key=lambda g: have[g] + asks[g])] += 1
    return asks


def _outcomes(step: SearchStep, plan: SearchPlan, rows: list[SearchCell], workdir: Path) -> list[_Trial]:
    """Each row's cell state, searched metric and pruner values (ended: the store; running: metrics.jsonl)."""
    keys = list({r.cell_key for r in rows})
    finals: dict[str, float] = {}
    steps: dict[str, dict[int, float]] = defaultdict(dict)
    watched, sign = _watched(plan)
    states = step.states(keys)
    for key, name, number, value in step.metrics(keys, {plan.spec.metric, watched}):
        if number is None and name == plan.spec.metric:
            finals[key] = value
        elif number is not None and name == watched:
            steps[key][number] = sign * value
    for key in keys:
        if states.get(key) == CellState.RUNNING and plan.spec.pruner is not None:
            for line in RunDir.of(workdir, key).reports():
                if watched in line.get("metrics", {}) and line.get("step") is not None:
                    steps[key][int(line["step"])] = sign * float(line["metrics"][watched])
    return [
        _Trial(r, states.get(r.cell_key, CellState.PLANNED), finals.get(r.cell_key), steps[r.cell_key])
        for r in rows
    ]


def _watched(plan: SearchPlan) -> tuple[str, float]:
    """The pruner's metric, and the sign that turns it into the search's direction."""
    pruner = plan.spec.pruner
    if pruner is None:
        return plan.spec.metric, 1.0
    direction = pruner.direction or plan.spec.direction
    return pruner.metric or plan.spec.metric, 1.0 if direction == plan.spec.direction else -1.0


def distributions(plan: SearchPlan) -> dict[str, optuna.distributions.BaseDistribution]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {
        a.name: CategoricalDistribution([as_choice(label) for label in a.labels]) for a in plan.searched
    }
    for path, p in plan.params.items():
        if isinstance(p, FloatParam):
            out[path] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            out[path] = IntDistribution(p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, CategoricalParam):
            out[path] = CategoricalDistribution(p.choices)
    return out


def _optuna_study(plan: SearchPlan, name: str, index: int, group: str, trials: list[_Trial]) -> optuna.Study:
    """An in-memory optuna study holding the group's trials as the store knows them.

    The sampler's seed follows the search seed, the group and the number of trials so far, so
    a rebuilt study asks what an uninterrupted one would, and two steps never draw alike.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a step rebuilds and re-warns each time
    seed = (plan.spec.seed * 1_000_003 + index * 10_007 + len(trials)) % 2**32
    options = dict(plan.spec.sampler_options)
    if (
        plan.spec.sampler == "grid"
    ):  # its seed shuffles the grid, whose indices the trials record: keep it fixed
        options["search_space"] = plan.grid
        seed = (plan.spec.seed * 1_000_003 + index * 10_007) % 2**32
    sampler = sampler_class(plan.spec.sampler)(seed=seed, **options)
    ost = optuna.create_study(
        study_name=f"{name}:{group}", direction=plan.spec.direction, sampler=sampler, pruner=_pruner(plan)
    )
    dists = distributions(plan)
    for t in trials:
        state = _FINAL.get(t.state, "RUNNING")
        value = t.value
        if state == "COMPLETE" and (value is None or not math.isfinite(value)):
            state, value = "FAIL", None  # the task did not return the searched metric
        try:
            ost.add_trial(
                create_trial(
                    state=TrialState[state],
                    value=value if state == "COMPLETE" else None,
                    params=t.row.params,
                    distributions={k: dists[k] for k in t.row.params if k in dists},
                    system_attrs=t.row.system_attrs,
                    intermediate_values={k: v for k, v in t.steps.items() if math.isfinite(v)},
                    user_attrs={"number": t.row.number, "cell_key": t.row.cell_key},
                )
            )
        except ValueError:
            continue  # params outside the space as the file now defines it: not evidence for this search
    return ost


def _pruner(plan: SearchPlan) -> optuna.pruners.BasePruner:
    import optuna

    p = plan.spec.pruner
    if p is None:
        return optuna.pruners.NopPruner()
    if p.kind == "median":
        return optuna.pruners.MedianPruner(p.n_startup_trials, p.n_warmup_steps, p.interval_steps)
    if p.kind == "percentile":
        return optuna.pruners.PercentilePruner(
            p.percentile, p.n_startup_trials, p.n_warmup_steps, p.interval_steps
        )
    if p.kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            p.min_resource, p.reduction_factor, p.min_early_stopping_rate
        )
    return optuna.pruners.HyperbandPruner(p.min_resource, p.max_resource, p.reduction_factor)


def _prune(
    step: SearchStep, plan: SearchPlan, ost: optuna.Study, trials: list[_Trial], workdir: Path
) -> None:
    """Ask the pruner about every running trial with values; request a stop where it says so."""
    by_number = {t.user_attrs["number"]: t for t in ost.get_trials(deepcopy=False)}
    for t in trials:
        frozen = by_number.get(t.row.number)
        run = RunDir.of(workdir, t.row.cell_key)
        if t.state != CellState.RUNNING or frozen is None or not t.steps or run.prune.exists():
            continue
        if ost.pruner.prune(ost, frozen):
            kind = plan.spec.pruner.kind if plan.spec.pruner else "search's"
            run.prune.write_text(f"pruned by the {kind} pruner at step {max(t.steps)}\n")
        # Pruners keep their bookkeeping (e.g. successive halving's rungs) in system attributes.
        attrs = ost.get_trials(deepcopy=False)[frozen.number].system_attrs
        if attrs != t.row.system_attrs:
            step.set_system_attrs(t.row.id, dict(attrs))


def _ask(plan: SearchPlan, ost: optuna.Study, group: str, number: int, study: Study) -> tuple[dict, Cell]:
    """A new trial: optuna's params applied to the group's template cell."""
    trial = ost.ask(distributions(plan))
    params = dict(trial.params)
    labels = dict(plan.groups[group])
    for axis in plan.searched:
        labels[axis.name] = next(label for label in axis.labels if as_choice(label) == params[axis.name])
    template = plan.template(labels)
    assert template is not None  # every choice has one: the spec checks that the rules exclude none
    frozen = ost.get_trials(deepcopy=False)[trial.number]
    config = template.config
    for path, value in params.items():
        if path in plan.params:
            config = set_path(config, tuple(path.split(".")), value)
    key = cell_key(study.task, config)
    labels = {**template.labels, TRIAL_LABEL: number}
    row = {
        "group_key": group,
        "kind": "trial",
        "number": number,
        "cell_key": key,
        "labels": labels,
        "params": params,
        "system_attrs": dict(frozen.system_attrs),
    }
    return row, Cell(key, config, labels, template.seed, template.resources)


def best_trial(plan: SearchPlan, trials: list[_Trial]) -> _Trial | None:
    """The completed trial with the best finite value (first of equals), or None."""
    sign = 1 if plan.spec.direction == "maximize" else -1
    done = [
        t for t in trials if t.value is not None and math.isfinite(t.value) and t.state == CellState.COMPLETED
    ]
    return max(done, key=lambda t: (sign * (t.value or 0.0), -t.row.number), default=None)


def _finals(step: SearchStep, plan: SearchPlan, group: str, trials: list[_Trial]) -> list[tuple[dict, Cell]]:
    """The best trial's configuration with each final seed, unless already recorded. The final seeds are
    not the trials' seed (spec), so each repeat is a fresh run, not the selected trial's cell again."""
    best = best_trial(plan, [t for t in trials if t.row.kind == "trial"])
    if best is None or not plan.final_seeds:
        return []
    mine = [t for t in trials if t.row.kind == "final" and t.row.number == best.row.number]
    if set(plan.final_seeds) <= {t.row.labels.get(SEED_AXIS) for t in mine}:
        return []
    recorded = {t.row.cell_key for t in mine}
    base = step.cell(best.row.cell_key)
    template = plan.template(best.row.labels)
    assert base is not None and template is not None  # a trial's cell is recorded, from its group's template
    resources = template.resources
    out = []
    for seed in plan.final_seeds:
        config = set_path(base.config, (SEED_AXIS,), seed)
        key = cell_key(base.task, config)
        if key in recorded:
            continue
        labels = {**best.row.labels, SEED_AXIS: seed}
        row = {
            "group_key": group,
            "kind": "final",
            "number": best.row.number,
            "cell_key": key,
            "labels": labels,
            "params": best.row.params,
            "system_attrs": {},
        }
        out.append((row, Cell(key, config, labels, seed, resources)))
    return out


def expected_cells(plan: SearchPlan) -> int:
    """Cells the search makes when it runs to the end (at most: repeated configs share a cell)."""
    return len(plan.groups) * (plan.budget + len(plan.final_seeds))


# ----------------------------------------------------------------------------- results


def _recorded(store: Store, study: Study) -> list[_Trial]:
    """The study's trials and final repeats (of its current groups), in the order they were recorded."""
    plan = study.search_plan
    with store.search_step(study.name, lock=False) as step:
        return _outcomes(
            step, plan, [r for r in step.rows() if r.group_key in plan.groups], Path(study.workdir).resolve()
        )


def trials(store: Store, study: Study) -> list[dict]:
    """Every trial and final repeat: its group's labels, number, params, cell state and value."""
    plan = study.search_plan
    return [
        {
            **plan.groups[t.row.group_key],
            "kind": t.row.kind,
            TRIAL_LABEL: t.row.number,
            SEED_AXIS: t.row.labels.get(SEED_AXIS),
            **t.row.params,
            "state": t.state,
            plan.spec.metric: t.value,
            "key": t.row.cell_key,
        }
        for t in _recorded(store, study)
    ]


@dataclass
class GroupResult:
    """One group's search as the report shows it."""

    labels: dict
    budget: int
    counts: dict[str, int]  # trials by outcome: completed, pruned, failed, running
    best: _Trial | None
    finals: dict[str, str]  # final cell key -> its state, for the current best
    final_values: list[float]
    unscored: list[str]  # completed trials' cells without a finite value of the metric (optuna: failed)


def results(store: Store, study: Study) -> list[GroupResult]:
    """Per group: trials by outcome, the best trial, and its final-seed repeats."""
    plan = study.search_plan
    trials = _recorded(store, study)
    out = []
    for g, labels in plan.groups.items():
        mine = [t for t in trials if t.row.group_key == g]
        tried = [t for t in mine if t.row.kind == "trial"]
        counts = {"completed": 0, "pruned": 0, "failed": 0, "running": 0}
        for t in tried:
            counts[
                {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}.get(
                    _FINAL.get(t.state, ""), "running"
                )
            ] += 1
        unscored = [
            t.row.cell_key
            for t in tried
            if t.state == CellState.COMPLETED and (t.value is None or not math.isfinite(t.value))
        ]
        best = best_trial(plan, tried)
        # Only the current final seeds: a store from before they had to be fresh holds the trial's own cell.
        finals = [
            t
            for t in mine
            if t.row.kind == "final"
            and best is not None
            and t.row.number == best.row.number
            and t.row.labels.get(SEED_AXIS) in plan.final_seeds
        ]
        values = [t.value for t in finals if t.state == CellState.COMPLETED and t.value is not None]
        out.append(
            GroupResult(
                labels, plan.budget, counts, best, {t.row.cell_key: t.state for t in finals}, values, unscored
            )
        )
    return out
