"""The rehearsal hook of the trial task (study key ``rehearse: model.rehearsal:rehearsal``; run by
``sweeper rehearse``, see sweeper.run.rehearse for the protocol): before a study goes to the cluster,
each distinct training config runs a few real steps here, on CPU.

A unit is one distinct (model, framework, data, train) config: the real model (scale, resolution,
registers, specialization), the real framework with its crops and schedules, ``steps`` optimiser
steps on a batch of ``BATCH`` through :func:`model.experiment.run` itself. The run is stopped at
the last step boundary the way a scheduler's preemption stops it (a checkpoint saved), then run
again: it restores the checkpoint (weights, optimizer, step), takes the last step and goes on to
the evaluations, each at its real resolution on a handful of images and one epoch of its head.
Each evaluation is rehearsed once per (evaluation config, model config less its specialization),
with the first unit that has it. The schedules are the real ones compressed into ``steps``
(``train.steps`` is set).

Configs that differ from a rehearsed one only by ``model.specialize`` (the variants of an ablation)
share its data, framework, schedules, checkpoint and evaluation code; they form one *variants* unit
of that config, which builds the real framework with each spec at the real size (so a spec the
model cannot take fails here), builds its parameter groups and optimiser, runs the trained
backbone forward and backward on one image at the real resolution (the specialized paths), and
saves and reloads the backbone's state dict (the spec it carries): seconds per variant instead of
a full unit's minutes, where DINOv2's 65,536-prototype heads, not the spec, dominate a step.

A dataset root that does not exist here is replaced by a fixture in the same on-disk layout
(model.data.fixtures), so the real loaders run; an existing root is used as it is.

A unit whose jobs run several processes (its world size, from the cells' resources) is rehearsed by
``PROCESSES`` of them, which sweeper.run.rehearse starts with torchrun's environment: each joins a gloo
group (collectives time out after ``COLLECTIVE_TIMEOUT_S``) and runs what a rank of the job runs,
model.train's DDP with the global batch split over the ranks (``BATCH`` images each), the checkpoint
saved by rank 0 and restored by every rank, and the evaluations on every rank (model.experiment runs
them there; rank 0 writes their results). Such a unit takes at least 3 steps, two of them before the
checkpoint: DDP finds a parameter that got no gradient only at the next step. Configs that differ
only by world size are separate units, and the real global batch must divide over the world size,
as model.train requires.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BATCH = 2  # images per optimiser step and process
PROCESSES = 2  # a unit whose jobs run several processes is rehearsed by this many
COLLECTIVE_TIMEOUT_S = 300  # longest wait of a rank for the others (a checkpoint of ViT-L, an evaluation)
EVAL_IMAGES = 2  # per split (per class for ImageNet folders); procedural: EVAL_IMAGES * 4
SHAPE_KEYS = ("model", "framework", "data", "train", "runtime")


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _unspecialized(shape: Mapping[str, Any]) -> dict:
    model = shape.get("model")
    if not isinstance(model, Mapping):
        return dict(shape)
    return {**shape, "model": {k: v for k, v in model.items() if k != "specialize"}}


def plan(configs: list[dict], processes: list[int] | None = None) -> list[dict]:
    """One unit per distinct training config (seed aside) and world size (``processes[i]``, 1 when
    not given), except that configs differing from an earlier one only by ``model.specialize`` join
    its variants unit (module docstring; one process: nothing is trained there); each evaluation
    goes with the first unit whose model (specialization aside) it is evaluated on. A unit:
    ``{config, world, processes, evals: [[name, raw], ...], cells}``, plus ``variants: [spec, ...]``
    for a variants unit."""
    units: dict[str, dict] = {}
    full: dict[str, str] = {}  # training config less the spec -> the first training config with it
    seen: set[str] = set()
    for i, config in enumerate(configs):
        shape = {k: config[k] for k in SHAPE_KEYS if k in config}
        world = processes[i] if processes else 1
        key, rest = _hash([shape, world]), _hash([_unspecialized(shape), world])
        first = full.setdefault(rest, key)
        if key not in units:
            new = {
                "config": {**shape, "seed": config.get("seed", 0)},
                "world": world,
                "processes": min(world, PROCESSES),
                "evals": [],
                "cells": [],
            }
            if key == first:
                units[key] = new
            else:  # a new spec of a rehearsed config
                units[key] = units.setdefault(f"variants-{rest}", {**new, "processes": 1, "variants": []})
                units[key]["variants"].append(shape["model"].get("specialize"))
        units[key]["cells"].append(i)
        evals = config.get("eval") or {}
        for name, raw in evals.items() if isinstance(evals, Mapping) else [(None, evals)]:
            eval_key = _hash([name, raw, _unspecialized(shape).get("model")])
            if eval_key not in seen:  # run on the full unit's model: the variants are not trained
                seen.add(eval_key)
                units[first]["evals"].append([name, raw])
    return list({id(u): u for u in units.values()}.values())


def _local_root(name: str, root: Any, shared: Path) -> Any:
    """``root`` when it exists here, else a fixture of dataset ``name`` written under ``shared``."""
    from model.data.fixtures import WRITERS, write_fixture

    if name not in WRITERS or (root is not None and Path(str(root)).expanduser().exists()):
        return root
    return str(write_fixture(name, shared / f"{name}-{_hash(root)[:8]}", images=EVAL_IMAGES))


def _local_eval(name: str | None, raw: Any, shared: Path) -> Any:
    """An evaluation's raw config on local data, with one epoch and a handful of images."""
    from model.eval import EVALS

    if not isinstance(raw, Mapping) or name not in EVALS:
        return raw  # model.experiment's parser says what is wrong
    raw = dict(raw)
    dataset = raw.get("dataset")
    if "root" in raw:
        raw["root"] = _local_root(str(dataset), raw["root"], shared)
    if dataset == "procedural":
        raw["size"] = EVAL_IMAGES * 4
    if "epochs" in EVALS[name].config.__dataclass_fields__:
        raw["epochs"] = 1
    return raw


class _Stop(Exception):
    """Raised at the step boundary where the rehearsal preempts its run."""


class _Context:
    """The task context of a rehearsal: asks for a checkpoint at step boundary ``stop_at`` (then
    unwinds, as sweeper's worker does on a preemption), times the steps (data, forward, backward,
    update) and names the stages."""

    cache_dir: Path | None

    def __init__(
        self, run_dir: Path, stage: Callable[[str], None], evals: list[str], stop_at: int | None = None
    ) -> None:
        self.run_dir, self.cache_dir, self.stage, self.evals = run_dir, None, stage, evals
        self.rank = int(os.environ.get("RANK", "0"))  # as sweeper's worker context: rank 0 writes
        self.stop_at, self.boundaries, self.trained = stop_at, 0, False
        self.step_started: float | None = None
        self.step_seconds: list[float] = []

    def report(self, step: int, metrics: dict[str, float], total: int | None = None) -> None:
        if "params.total" in metrics:  # pretraining is over; evaluations follow
            self.trained = True
        elif self.step_started is not None:
            self.step_seconds.append(time.perf_counter() - self.step_started)

    def checkpoint_if_requested(self, save: Callable[[], None]) -> None:
        if self.trained:  # model.experiment.run asks before each evaluation, in config order
            self.stage(f"eval {self.evals.pop(0)}")
            return
        if self.boundaries == self.stop_at:
            save()
            raise _Stop
        self.boundaries += 1
        self.step_started = time.perf_counter()


@contextmanager
def _group() -> Iterator[tuple[int, int]]:
    """(rank, world size): a gloo group of the processes torchrun's environment names, or (0, 1)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield 0, 1
        return
    dist.init_process_group("gloo", timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        yield dist.get_rank(), world
    finally:
        dist.destroy_process_group()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _check_world(config: Mapping[str, Any], world: int) -> None:
    """The job's global batch must divide over its processes (model.train refuses it otherwise)."""
    from model.config import TrainConfig, validate
    from model.recipes import resolve

    batch = validate(TrainConfig, resolve(config)[0].get("train"), "train").batch_size
    if batch % world:
        raise ValueError(
            f"train.batch_size {batch} is not divisible by the {world} processes of the job "
            "(resources: nodes x tasks_per_node)"
        )


def _variants(unit: Mapping[str, Any], stage: Callable[[str], None]) -> dict[str, float]:
    """Each spec of a variants unit: the real framework and its optimiser built, a forward and
    backward pass of its trained backbone, whose state dict is saved and reloaded (module docstring)."""
    import io

    import torch

    from model.config import TrainConfig, validate
    from model.frameworks import build_framework
    from model.optim import build_optimizer, param_groups, trained_backbones
    from model.recipes import resolve

    params = 0
    for spec in unit["variants"]:
        stage(f"build {json.dumps(spec, sort_keys=True)}")
        config = copy.deepcopy(dict(unit["config"]))
        config["model"] = {**config["model"], "specialize": spec}
        resolved = resolve(config)[0]
        train = validate(TrainConfig, {**resolved["train"], "steps": 1}, "train")
        torch.manual_seed(int(config.get("seed", 0)))
        framework = build_framework(
            resolved["model"], resolved["framework"], num_classes=1000, total_steps=1
        )  # the classifier's size does not depend on the spec
        params = max(params, sum(p.numel() for p in framework.parameters()))
        stage("backward")
        build_optimizer(param_groups(framework, train), train)
        for vit in trained_backbones(framework).values():
            size = vit.patch_embed.img_size
            vit.train().forward_features(torch.randn(1, 3, *size)).float().square().mean().backward()
            stage("checkpoint")
            buffer = io.BytesIO()
            torch.save(vit.state_dict(), buffer)
            buffer.seek(0)
            vit.load_state_dict(torch.load(buffer, weights_only=False))
            del vit, buffer
        del framework
        gc.collect()
    stage("done")
    return {"params": float(params)}


def run(
    unit: Mapping[str, Any], *, steps: int, workdir: Path, shared: Path, stage: Callable[[str], None]
) -> dict[str, float]:
    """Rehearse one unit of :func:`plan` (module docstring); raises what the real run raises."""
    with _group() as (rank, world):
        return _run(unit, steps, workdir, shared, stage, rank, world)


def _run(
    unit: Mapping[str, Any],
    steps: int,
    workdir: Path,
    shared: Path,
    stage: Callable[[str], None],
    rank: int,
    world: int,
) -> dict[str, float]:
    from model.experiment import run as run_cell

    if "variants" in unit:
        return _variants(unit, stage)
    stage("data")
    config = copy.deepcopy(dict(unit["config"]))
    if rank > 0:
        _barrier()  # rank 0 writes the fixtures first
    data = config.get("data")
    if isinstance(data, Mapping) and "root" in data:
        config["data"] = {**data, "root": _local_root(str(data.get("name")), data["root"], shared)}
    groups: list[dict] = [{}]  # evaluations sharing a name run in separate passes (the backbone is cached)
    for name, raw in unit["evals"]:
        group = next((g for g in groups if name not in g), None)
        if group is None:
            groups.append(group := {})
        group[name] = _local_eval(name, raw, shared)
    if rank == 0:
        _barrier()

    stage("train")
    if unit.get("world", 1) > 1:
        _check_world(config, unit["world"])
    if world > 1:  # DDP finds an unused parameter at the step after: two run before the checkpoint
        steps = max(steps, 3)
    if isinstance(config.get("train"), Mapping):
        config["train"] = {
            **config["train"],
            "steps": steps,
            "batch_size": BATCH * world,
            "log_every": 1,
            "checkpoint_every": 0,
            "num_workers": 0,
        }
    seconds: list[float] = []
    first = _Context(workdir, stage, [], stop_at=steps - 1)
    try:
        run_cell({**config, "eval": {}}, first)
        raise RuntimeError(f"the run did not stop for a checkpoint at step {steps - 1}")
    except _Stop:
        seconds += first.step_seconds
    del first
    gc.collect()
    _barrier()  # the checkpoint rank 0 saved is there for every rank
    stage("resume")
    for evals in groups:
        ctx = _Context(workdir, stage, [str(n) for n in evals])
        metrics = run_cell({**config, "eval": evals if None not in evals else evals[None]}, ctx)
        seconds += ctx.step_seconds
        _barrier()  # rank 0's final checkpoint is written before any rank loads it for the next pass
    if metrics.get("pretrain.steps") != steps:
        raise RuntimeError(f"the resumed run ended at step {metrics.get('pretrain.steps')}, not {steps}")
    stage("done")
    return {
        "seconds_per_step": sum(seconds) / len(seconds) if seconds else 0.0,
        "params": metrics.get("params.total", 0.0),
        "ranks": world,
    }


# what `rehearse:` names: the protocol of sweeper.run.rehearse
rehearsal = SimpleNamespace(plan=plan, run=run)
