"""The optimiser side of a recipe: parameter groups with per-parameter lr multipliers (layer-wise
decay, patch-embed multiplier, frozen last layer), the schedules of each step, the optimiser
(AdamW, or timm's LAMB for DeiT-III) and gradient clipping (global or per module, as DINOv2).

Multipliers follow DINOv2's ``param_groups.py``: ``layerwise_decay ** (depth + 1 - layer_id)``,
layer 0 for the patch embedding, position embedding, CLS / register / mask tokens, ``i + 1`` for
block ``i``, ``depth + 1`` for the rest of the backbone (final norm); heads get 1; anything named
``patch_embed`` is also multiplied by ``patch_embed_lr_mult``. Weight decay skips biases and 1-D
parameters (norms, LayerScale), and the tokens unless ``decay_tokens`` (DINOv2 decays them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from timm.optim import Lamb, param_groups_weight_decay
from torch import nn

from model.config import TrainConfig
from model.frameworks import cosine_schedule

_NO_WEIGHT_DECAY = ("*pos_embed", "*cls_token", "*reg_token", "*mask_token")
_LAYER0 = ("patch_embed", "pos_embed", "cls_token", "reg_token")


def peak_lr(train: TrainConfig) -> float:
    """The base lr after the recipe's batch-size rule (DINOv2: ``lr * sqrt(batch / 1024)``)."""
    if train.lr_scaling == "sqrt_wrt_1024":
        return train.lr * math.sqrt(train.batch_size / 1024)
    if train.lr_scaling == "linear_wrt_512":
        return train.lr * train.batch_size / 512
    return train.lr


@dataclass(frozen=True)
class Schedule:
    """Every per-step value of the optimiser: a pure function of the step (its whole state)."""

    train: TrainConfig
    total: int  # optimizer steps
    steps_per_epoch: float

    @property
    def warmup(self) -> int:
        if self.train.warmup_steps is not None:
            return self.train.warmup_steps
        if self.train.warmup_epochs is not None:
            return round(self.train.warmup_epochs * self.steps_per_epoch)
        return self.total // 10

    @property
    def freeze_last_layer(self) -> int:
        return round(self.train.freeze_last_layer_epochs * self.steps_per_epoch)

    def lr(self, step: int) -> float:
        """Linear warmup from ``warmup_lr``, then cosine to ``min_lr`` at the last step; per epoch
        with ``lr_step: epoch`` (:meth:`epoch_lr`)."""
        if self.train.lr_step == "epoch":
            return self.epoch_lr(step)
        return cosine_schedule(
            step, self.total, peak_lr(self.train), self.train.min_lr, self.warmup, self.train.warmup_lr
        )

    def epoch_lr(self, step: int) -> float:
        """The lr of DeiT-III's timm ``CosineLRScheduler``, which ``main.py`` steps with the index
        of each finished epoch: epoch ``k`` runs at the value of ``t = k - 1`` (epochs 0 and 1 at
        ``warmup_lr``). The value is a linear warm-up ``warmup_lr + t (lr - warmup_lr) / warmup``
        for ``t < warmup`` epochs, then a cosine over all the epochs, not shifted by the warm-up
        (``warmup_prefix=False``), towards ``min_lr``."""
        epochs = self.train.epochs if self.train.steps is None else self.total / self.steps_per_epoch
        assert epochs is not None  # TrainConfig has steps or epochs (model.train checks)
        warmup = self.train.warmup_epochs
        if warmup is None:
            warmup = self.warmup / self.steps_per_epoch
        t = max(0, int(step // self.steps_per_epoch) - 1)
        peak, low = peak_lr(self.train), self.train.min_lr
        if t < warmup:
            return self.train.warmup_lr + t * (peak - self.train.warmup_lr) / warmup
        return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * t / epochs))

    def last_layer_lr(self, step: int) -> float:
        return 0.0 if step < self.freeze_last_layer else self.lr(step)

    def weight_decay(self, step: int) -> float:
        """Cosine from ``weight_decay`` to ``weight_decay_end`` over the whole run, no warmup."""
        end = self.train.weight_decay if self.train.weight_decay_end is None else self.train.weight_decay_end
        return cosine_schedule(step, self.total, self.train.weight_decay, end)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set each group's lr and weight decay for ``step``; returns the (unmultiplied) lr."""
        lr, last, wd = self.lr(step), self.last_layer_lr(step), self.weight_decay(step)
        for group in optimizer.param_groups:
            group["lr"] = (last if group["last_layer"] else lr) * group["lr_mult"]
            group["weight_decay"] = wd * group["wd_scale"]
        return lr


def trained_backbones(framework: nn.Module) -> dict[str, VisionTransformer]:
    """The trained ViTs of the framework by attribute name (the student, or the supervised vit)."""
    return {
        name: m
        for name, m in framework.named_children()
        if isinstance(m, VisionTransformer) and any(p.requires_grad for p in m.parameters())
    }


def lr_multiplier(name: str, backbones: dict[str, VisionTransformer], train: TrainConfig) -> float:
    """The lr multiplier of parameter ``name`` (a framework-level name); see the module docstring."""
    prefix, _, rest = name.partition(".")
    if prefix in backbones:
        depth = len(backbones[prefix].blocks)
        block = re.match(r"blocks\.(\d+)\.", rest)
        layer = 0 if rest.startswith(_LAYER0) else int(block.group(1)) + 1 if block else depth + 1
    elif name == "mask_token":
        depth, layer = max(len(v.blocks) for v in backbones.values()), 0
    else:
        return 1.0
    mult = train.layerwise_decay ** (depth + 1 - layer)
    return mult * train.patch_embed_lr_mult if "patch_embed" in name else mult


def param_groups(framework: nn.Module, train: TrainConfig) -> list[dict[str, Any]]:
    """timm's decay / no-decay groups, each split by lr multiplier and last-layer membership (in
    order, so that without multipliers the groups are timm's own)."""
    names = {id(p): n for n, p in framework.named_parameters()}
    backbones = trained_backbones(framework)
    out = []
    skip = () if train.decay_tokens else _NO_WEIGHT_DECAY
    for group in param_groups_weight_decay(framework, train.weight_decay, no_weight_decay_list=skip):
        buckets: dict[tuple[float, bool], list[nn.Parameter]] = {}
        for p in group["params"]:
            name = names[id(p)]
            key = (lr_multiplier(name, backbones, train), ".last_layer." in f".{name}")
            buckets.setdefault(key, []).append(p)
        for (mult, last), params in buckets.items():
            out.append(
                {
                    **group,
                    "params": params,
                    "lr_mult": mult,
                    "last_layer": last,
                    "wd_scale": 1.0 if group["weight_decay"] > 0 else 0.0,
                }
            )
    return out


def build_optimizer(groups: list[dict[str, Any]], train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (fused), or LAMB from timm.optim (apex FusedLAMB's defaults: global clip at 1.0,
    trust ratio only where weight decay applies)."""
    if train.optimizer == "lamb":
        return Lamb(groups, lr=train.lr, betas=train.betas, max_grad_norm=1.0)
    return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas, fused=True)


def clip_groups(
    framework: nn.Module, groups: list[dict[str, Any]], train: TrainConfig
) -> list[list[nn.Parameter]]:
    """The parameter sets clipped together: all (in group order), or one per top-level module
    (DINOv2 clips the backbone and each head on its own)."""
    params = [p for g in groups for p in g["params"]]
    if not train.clip_grad_per_module:
        return [params]
    names = {id(p): n for n, p in framework.named_parameters()}
    sets: dict[str, list[nn.Parameter]] = {}
    for p in params:
        sets.setdefault(names[id(p)].partition(".")[0], []).append(p)
    return list(sets.values())
