"""The pretraining loop: one function, ``pretrain(config, ckpt_dir)``, for every framework.

The config is first resolved against its recipe (model.recipes); the optimiser, its parameter
groups and schedules are model.optim's (AdamW or LAMB, warmup + cosine lr, cosine weight decay,
layer-wise decay, last-layer freeze; teacher momentum and temperature live in the framework),
gradient clipping, bf16 autocast on CUDA, DDP through
torch.distributed (env:// from torchrun, or SLURM via submitit), atomic checkpoints every
``train.checkpoint_every`` steps, on demand (``ctx.checkpoint_if_requested``) and at the end.

Reproducibility, and why a resumed run matches the uninterrupted one: every random draw is a
function of the seed and a position, never of process history. Sample ``p`` of the stream (global
position ``step * batch_size + j``) is image ``order(epoch)[p mod E]`` (a permutation of the N
images, E = N; with ``train.repeated_aug``, timm's RepeatAugSampler list, whose copies of an image
are consecutive and so go to consecutive ranks, as DeiT's RASampler deals them), augmented under a
torch seed derived from ``(seed, p)`` (a batch's iBOT masks from its samples' streams); the
model's own randomness (stochastic depth, Mixup) is reseeded from ``(seed, step, rank)`` before
each step. So the step is the data position and the RNG state at once: a checkpoint holds the
framework (student, teacher, heads, centers), the optimizer and the step, and the run continues
identically on any number of data workers. Rank ``r`` of ``W`` takes positions ``r, r + W, ...``
of each global batch, so DDP sees exactly the single-process images; what is drawn per batch
(iBOT masks stratified over the batch, Mixup pairs) is drawn per rank's batch, as the references
do per GPU.
"""

from __future__ import annotations

import inspect
import math
import os
import pathlib
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from timm.data.distributed_sampler import RepeatAugSampler
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from model.config import TrainConfig, validate
from model.data import Sample, Transform, VisionDataset, build_dataset, dataset_class, finalize
from model.frameworks import build_framework
from model.optim import Schedule, build_optimizer, clip_groups, param_groups
from model.recipes import resolve
from sweeper.task import TaskContext as Context

__all__ = ["CHECKPOINT_NAME", "NonFiniteLoss", "TrainConfig", "pretrain"]

CHECKPOINT_NAME = "last.pt"


class NonFiniteLoss(RuntimeError):
    """A NaN or infinite loss; the message names the step and the value of every loss term."""

    def __init__(self, step: int, total: int, losses: Mapping[str, float]) -> None:
        self.step, self.losses = step, dict(losses)
        terms = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        super().__init__(f"non-finite loss at step {step} of {total}: {terms}")


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device


def _init_distributed() -> _Dist:
    """Join the process group named by the environment (torchrun's RANK/WORLD_SIZE/MASTER_ADDR,
    or a multi-task SLURM job through submitit); one process otherwise. A group the caller has
    already initialised is used as is; the group is left up for the caller (evaluation)."""
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        if "RANK" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit.helpers

            submitit.helpers.TorchDistributedEnvironment().export()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return _Dist(rank, world, torch.device("cuda", local))
    return _Dist(rank, world, torch.device("cpu"))


def _mix(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy's SeedSequence hashing: nearby keys, unrelated seeds)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> 1)


_SAMPLE, _STEP, _EPOCH = 1, 2, 3  # seed domains


def _repeat_sampler(dataset_len: int, repeats: int) -> RepeatAugSampler:
    """timm's RepeatAugSampler (DeiT's RASampler) as one process: its list is the global order,
    which the ranks deal round-robin as the sampler's ranks would."""
    return RepeatAugSampler(range(dataset_len), num_replicas=1, rank=0, num_repeats=repeats)


def epoch_samples(dataset_len: int, repeats: int = 1) -> int:
    """Samples in one epoch: the dataset, or with repeated augmentation what RASampler yields
    (each image ``repeats`` times in a row, ``N // 256 * 256`` samples: about N / repeats images)."""
    return dataset_len if repeats == 1 else len(_repeat_sampler(dataset_len, repeats))


class _SampleStream(Dataset):
    """Item ``p`` of an endless stream over ``dataset``: epoch ``p // E`` in its own order (a
    permutation, or RepeatAugSampler's list with ``repeats``), augmented with a torch RNG seeded by
    ``(seed, p)``; see the module docstring."""

    def __init__(self, dataset: VisionDataset, transform: Transform, seed: int, repeats: int = 1) -> None:
        self.dataset, self.transform, self.seed, self.repeats = dataset, transform, seed, repeats
        self.epoch_len = epoch_samples(len(dataset), repeats)

    @lru_cache(maxsize=2)  # noqa: B019 (the sampler lives as long as its run; 2 entries)
    def _order(self, epoch: int) -> torch.Tensor:
        if self.repeats > 1:
            sampler = _repeat_sampler(len(self.dataset), self.repeats)
            sampler.set_epoch(_mix(self.seed, _EPOCH, epoch))  # seeds its permutation
            return torch.tensor(list(sampler))
        generator = torch.Generator().manual_seed(_mix(self.seed, _EPOCH, epoch))
        return torch.randperm(len(self.dataset), generator=generator)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Sample:
        epoch, offset = divmod(position, self.epoch_len)
        sample = self.dataset.load(int(self._order(epoch)[offset]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, _SAMPLE, position))
            return finalize(self.transform(sample))


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return [_to_device(v, device) for v in batch]
    return batch


def _save(path: pathlib.Path, state: dict[str, Any]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``: a
    reader (or a resume after a kill mid-write) sees the old checkpoint or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _data_config(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    data = dict(config.get("data") or {"name": "procedural"})
    name = data.pop("name", "procedural")
    if "resolution" in inspect.signature(dataset_class(name).__init__).parameters:
        data.setdefault("resolution", (config.get("model") or {}).get("img_size", 32))
    return name, data


def _steps_per_epoch(train: TrainConfig, dataset_len: int) -> float:
    """``epoch_length`` (DINOv2's OFFICIAL_EPOCH_LENGTH) or one epoch of ``dataset_len`` samples
    (:func:`epoch_samples`)."""
    return float(train.epoch_length) if train.epoch_length else dataset_len / train.batch_size


def _total_steps(train: TrainConfig, dataset_len: int) -> int:
    if train.steps is not None:
        return int(train.steps)
    if train.epochs is None:
        raise ValueError("train: set steps (optimizer steps in total) or epochs")
    if train.epoch_length:
        return math.ceil(train.epochs * train.epoch_length)
    return math.ceil(train.epochs * dataset_len / train.batch_size)


class _Progress:
    """Pretraining progress on stderr: a rich bar in a terminal; elsewhere (a cell's log under
    sweeper, a pipe) a plain line at most every LINE_EVERY_S seconds and at the end."""

    LINE_EVERY_S = 30.0

    def __init__(self, total: int, start: int) -> None:
        self.total, self.start, self.begun, self.last = total, start, time.perf_counter(), 0.0
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} img/s"),
                TimeRemainingColumn(),
            )
            self.bar.add_task("pretrain", total=total, completed=start, loss="-", rate="-")
            self.bar.start()

    def update(self, done: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.bar.task_ids[0], completed=done, loss=f"{loss:.4f}", rate=f"{rate:.1f}")
            return
        now = time.perf_counter() - self.begun
        if now - self.last < self.LINE_EVERY_S and done < self.total:
            return
        self.last = now
        left = now / max(done - self.start, 1) * (self.total - done)
        print(
            f"pretrain {done}/{self.total} ({100 * done / self.total:.0f}%) loss {loss:.4f}, "
            f"{rate:.1f} img/s, "
            f"{now:.0f}s elapsed, ETA {left:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def pretrain(
    config: dict, ckpt_dir: pathlib.Path, *, ctx: Context | None = None, progress: bool = True
) -> tuple[VisionTransformer, dict[str, float]]:
    """Pretrain the backbone described by config; resume from ckpt_dir when it holds a checkpoint.

    Returns (the backbone — a specialized timm VisionTransformer, the teacher's for
    self-distillation frameworks, in eval mode —, summary metrics: ``pretrain.loss`` (mean of the
    last ``log_every`` steps) and its terms, ``pretrain.steps`` (in total), ``pretrain.steps_run``
    (by this call; 0 when ckpt_dir already holds the finished run), ``pretrain.img_per_s``,
    ``pretrain.seconds``). Raises NonFiniteLoss on a NaN/inf loss, before any update with it.
    """
    ckpt_path = pathlib.Path(ckpt_dir) / CHECKPOINT_NAME
    config, _ = resolve(config)
    seed = int(config.get("seed", 0))
    model_cfg = dict(config.get("model") or {})
    framework_cfg = dict(config.get("framework") or {"name": "dinov2"})
    train = validate(TrainConfig, config.get("train"), "train")
    env = _init_distributed()
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None

    if checkpoint is not None and checkpoint["step"] >= checkpoint["total_steps"]:
        torch.manual_seed(seed)
        framework = build_framework(
            model_cfg,
            framework_cfg,
            num_classes=checkpoint["num_classes"],
            total_steps=checkpoint["total_steps"],
        )
        framework.load_state_dict(checkpoint["framework"])
        return framework.backbone().eval(), {**checkpoint["summary"], "pretrain.steps_run": 0}

    data_name, data_cfg = _data_config(config)
    dataset = build_dataset(data_name, "train", **data_cfg)
    samples = epoch_samples(len(dataset), train.repeated_aug)
    total = _total_steps(train, samples)
    schedule = Schedule(train, total, _steps_per_epoch(train, samples))
    if train.batch_size % env.world != 0:
        raise ValueError(
            f"train.batch_size {train.batch_size} is not divisible by the {env.world} DDP processes"
        )
    torch.manual_seed(seed)
    framework = build_framework(
        model_cfg,
        framework_cfg,
        num_classes=dataset.num_classes,
        total_steps=total,
        steps_per_epoch=schedule.steps_per_epoch,
    ).to(env.device)
    groups = param_groups(framework, train)
    optimizer = build_optimizer(groups, train)
    clipped = clip_groups(framework, groups, train)
    start = 0
    if checkpoint is not None:
        framework.load_state_dict(checkpoint["framework"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start = checkpoint["step"]
        del checkpoint  # its weights: a second copy of the model's for the rest of the run

    model: nn.Module = framework
    if env.world > 1:
        model = DistributedDataParallel(  # every parameter gets a gradient: see model.vit's DDP note
            framework,
            device_ids=[env.device.index] if env.device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # gradients live in DDP's buckets: no second copy of them
            broadcast_buffers=False,
        )  # buffers (centers) are kept equal by all-reduced updates
    local_batch = train.batch_size // env.world
    loader = DataLoader(
        _SampleStream(dataset, framework.train_transform(), seed, train.repeated_aug),
        batch_size=local_batch,
        sampler=range(start * train.batch_size + env.rank, total * train.batch_size, env.world),
        collate_fn=framework.train_collate(),
        num_workers=train.num_workers,
        pin_memory=env.device.type == "cuda",
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=env.device.type == "cuda")

    def state(step: int, summary: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "step": step,
            "total_steps": total,
            "num_classes": dataset.num_classes,
            "framework": framework.state_dict(),
            "optimizer": optimizer.state_dict(),
            "train": train.model_dump(),
            "summary": summary,
        }

    def save(step: int, summary: dict[str, float] | None = None) -> None:
        if env.rank == 0:
            _save(ckpt_path, state(step, summary))

    bar = _Progress(total, start) if progress and env.rank == 0 else None
    window: list[dict[str, float]] = []
    begun = time.perf_counter()
    tick, tick_step = begun, start
    framework.train()
    try:
        batches = iter(loader)
        for step in range(start, total):
            if ctx is not None:
                ctx.checkpoint_if_requested(partial(save, step))
            batch = _to_device(next(batches), env.device)
            torch.manual_seed(_mix(seed, _STEP, step, env.rank))
            lr = schedule.apply(optimizer, step)
            with autocast:
                losses = model(batch, step)
            values = torch.stack([v.detach().float() for v in losses.values()])
            if env.world > 1:
                dist.all_reduce(values)
                values /= env.world
            logged = dict(zip(losses, values.tolist(), strict=True))
            if not all(math.isfinite(v) for v in logged.values()):
                raise NonFiniteLoss(step + 1, total, logged)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if train.clip_grad:
                for params in clipped:
                    nn.utils.clip_grad_norm_(params, train.clip_grad)
            optimizer.step()
            framework.after_step(step)
            window = [*window[-(train.log_every - 1) :], logged] if train.log_every > 1 else [logged]

            done = step + 1
            if done % train.log_every == 0 or done == total:
                now = time.perf_counter()
                rate = (done - tick_step) * train.batch_size / (now - tick)
                tick, tick_step = now, done
                mean = {f"pretrain.{k}": sum(w[k] for w in window) / len(window) for k in logged}
                if ctx is not None and env.rank == 0:
                    ctx.report(done, {**mean, "pretrain.lr": lr, "pretrain.img_per_s": rate}, total=total)
                if bar is not None:
                    bar.update(done, mean["pretrain.loss"], rate)
            if train.checkpoint_every and done % train.checkpoint_every == 0 and done < total:
                save(done)
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - begun
    summary = {f"pretrain.{k}": sum(w[k] for w in window) / len(window) for k in window[0]} if window else {}
    summary.update(
        {
            "pretrain.steps": float(total),
            "pretrain.steps_run": float(total - start),
            "pretrain.img_per_s": (total - start) * train.batch_size / seconds if seconds else 0.0,
            "pretrain.seconds": seconds,
        }
    )
    save(total, {**summary, "pretrain.steps_run": 0.0})
    return framework.backbone().eval(), summary
