"""The interface every pretraining framework implements, and the pieces they share.

A framework is an ``nn.Module`` that owns everything it trains and everything it must checkpoint
(student, teacher, heads, centers, mask token): its ``state_dict`` is the framework's state. The
training loop (model.train) only needs:

* ``Framework.from_config(model_cfg, options, num_classes=..., total_steps=...)``: build it;
* ``train_transform()``: the per-sample augmentation (multi-crop, ...);
* ``train_collate()``: the batch's collation (default_collate; iBOT adds its per-batch masks);
* ``forward(batch, step)``: one step's losses, a dict with the total under ``"loss"`` (forward, so
  that DistributedDataParallel wraps the framework and syncs the gradients of what it trains);
* ``after_step(step)``: what follows the optimizer step (the EMA teacher update);
* ``backbone()``: the ViT to evaluate (the teacher's for self-distillation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import default_collate

from model.config import Strict, validate
from model.data import Sample, Transform
from model.droppath import set_drop_path
from model.vit import build_vit

# model config keys read here; every other key goes to timm's VisionTransformer (e.g. init_values)
MODEL_DEFAULTS: dict[str, Any] = dict(scale="micro", img_size=32, patch_size=4, registers=0, specialize=None)


def parse_options(cls: type, options: Mapping[str, Any], where: str) -> Any:
    """Validate a config mapping into the Strict model ``cls``; ConfigError names every bad key.

    A misspelled key that silently fell back to its default would run the wrong ablation.
    """
    return validate(cls, options, where)


def build_backbone(
    model_cfg: Mapping[str, Any], *, num_classes: int = 0, **defaults: Any
) -> VisionTransformer:
    """The (specialized) timm ViT of ``model_cfg``; ``defaults`` are framework-chosen timm kwargs
    (LayerScale, dynamic image size) that the model config may override. With
    ``drop_path_uniform`` (the default) every block drops its residuals at ``drop_path_rate``, as
    DINOv2 and DeiT-III do, rather than timm's linear ramp from 0; ``drop_path_subset`` runs each
    residual branch on a batch subset instead, as DINOv2 (model.droppath)."""
    cfg = {**MODEL_DEFAULTS, **defaults, **{k: v for k, v in model_cfg.items() if v is not None}}
    uniform = cfg.pop("drop_path_uniform", True)
    subset = cfg.pop("drop_path_subset", False)
    vit = build_vit(cfg.pop("scale"), num_classes=num_classes, **cfg)
    set_drop_path(vit, float(cfg.get("drop_path_rate") or 0.0), uniform, subset)
    return vit


def patch_tokens(vit: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The patch tokens of a ``forward_features`` output: CLS and registers are prefix tokens."""
    return tokens[:, vit.num_prefix_tokens :]


def forward_masked(
    vit: VisionTransformer, images: torch.Tensor, masks: torch.Tensor, mask_token: torch.Tensor
) -> torch.Tensor:
    """``vit.forward_features`` with the patch embeddings at ``masks`` (B×N, bool) replaced by
    ``mask_token`` before positional embedding, as iBOT/DINOv2 do, through timm's own pieces.

    ``torch.where`` keeps the mask token in the graph even when nothing is masked, so DDP never
    sees it as an unused parameter.
    """
    x = vit.patch_embed(images)  # B×N×C, or B×H×W×C with dynamic_img_size
    x = torch.where(masks.view(*x.shape[:-1], 1), mask_token.to(x.dtype), x)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    x = vit.blocks(x)
    return vit.norm(x)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over DDP ranks in place (a no-op in a single process); statistics such as the DINO
    center and Sinkhorn-Knopp marginals must be global for DDP to match one process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class KeepKeys:
    """Drop every sample key but ``keys`` (e.g. the segmentation mask a pretraining never uses).
    A class, not a closure, so that DataLoader workers can pickle it."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys

    def __call__(self, sample: Sample) -> Sample:
        return {k: v for k, v in sample.items() if k in self.keys}


class Framework(nn.Module):
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str]
    Options: ClassVar[type[Strict]]

    @classmethod
    def from_config(
        cls,
        model_cfg: Mapping[str, Any],
        options: Mapping[str, Any],
        *,
        num_classes: int | None,
        total_steps: int,
        steps_per_epoch: float | None = None,
    ) -> Framework:
        opts = parse_options(
            cls.Options, {k: v for k, v in options.items() if k not in ("name", "recipe")}, "framework"
        )
        return cls(
            model_cfg, opts, num_classes=num_classes, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )

    def train_transform(self) -> Transform:
        raise NotImplementedError

    def train_collate(self) -> Callable[[list[Sample]], Sample]:
        """Samples -> batch, run by the data workers; picklable (not a bound method of the module)."""
        return default_collate

    def forward(self, batch: Sample, step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (no-op unless there is a teacher)."""

    def backbone(self) -> VisionTransformer:
        raise NotImplementedError


def cosine_schedule(
    step: int, total: int, start: float, end: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warmup from ``warmup_start`` to ``start``, then cosine from ``start`` to ``end`` at
    step ``total``: DINO's and DINOv2's ``CosineScheduler`` as a function of the step, used for the
    learning rate, weight decay, teacher momentum and temperature alike. As there, the warm-up is
    ``linspace(warmup_start, start, warmup_steps)`` with both ends included (``start`` is reached
    at step ``warmup_steps - 1``, and again at ``warmup_steps``, the cosine's first), and the last
    step ``total - 1`` is one cosine step short of ``end``. Being a pure function of the step, a
    schedule's whole state is the step, which the checkpoint holds."""
    if step < warmup_steps:
        return warmup_start + (start - warmup_start) * step / max(1, warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))
