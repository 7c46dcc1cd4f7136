"""Linear monocular depth on a frozen backbone (DINOv2's "lin. 1" depth protocol).

A BatchNorm + 1×1 conv head reads the last-layer patch tokens (with the CLS token concatenated
to every patch, ``cls_concat``) and predicts either a distribution over uniform depth bins whose
expectation is the depth (``head: bins``, DINOv2's classification-regression) or log-depth
directly (``head: regression``). The prediction is upsampled bilinearly to the target and trained
with the scale-invariant log loss (SILog) over valid pixels. Scores are per-image RMSE (m), AbsRel
and δ<1.25 (%), averaged over images; invalid pixels (depth 0) are masked everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model.eval.base import (
    EvalConfig,
    EvalError,
    FeatureCache,
    LinearDenseHead,
    extract,
    fit,
    minibatches,
    steps_per_epoch,
)
from model.eval.segmentation import streamed


@dataclass(frozen=True)
class LinearDepthConfig(EvalConfig):
    name = "linear_depth"
    head: Literal["bins", "regression"] = "bins"
    bins: int = 256
    min_depth: float = 1.0e-3
    max_depth: float | None = None  # None: the largest valid depth of the training split
    cls_concat: bool = True
    epochs: int = 20
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    batch_size: int = 64
    cache_features: bool = True

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0 or self.bins < 2:
            raise EvalError(f"eval.{self.name}: need epochs >= 1, batch_size >= 2, lr > 0 and bins >= 2")
        if self.min_depth <= 0 or (self.max_depth is not None and self.max_depth <= self.min_depth):
            raise EvalError(f"eval.{self.name}: need 0 < min_depth < max_depth")


class DepthHead(nn.Module):
    """Linear head on patch tokens (+ CLS) that outputs depth in metres at the target size."""

    def __init__(self, dim: int, config: LinearDepthConfig, max_depth: float) -> None:
        super().__init__()
        self.cls_concat, self.mode = config.cls_concat, config.head
        self.min_depth, self.max_depth = config.min_depth, max_depth
        self.linear = LinearDenseHead(
            dim * (2 if config.cls_concat else 1), config.bins if config.head == "bins" else 1
        )
        self.register_buffer(
            "centres", torch.linspace(config.min_depth, max_depth, config.bins).view(1, -1, 1, 1)
        )

    def forward(self, cls: torch.Tensor, patch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.cls_concat:
            patch = torch.cat((patch, cls[:, :, None, None].expand_as(patch)), 1)
        out = self.linear.conv(self.linear.bn(patch))
        # Depth on the token grid, then upsampled: the bin expectation is linear, so this equals
        # upsampling the bin probabilities, at 1/bins of the cost.
        depth = (out.softmax(1) * self.centres).sum(1, keepdim=True) if self.mode == "bins" else out.exp()
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)[:, 0]
        return depth.clamp(self.min_depth, self.max_depth)


def silog(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    valid = target > 0
    g = pred[valid].log() - target[valid].log()
    return 10 * (g.pow(2).mean() - variance_focus * g.mean().pow(2)).clamp(min=1e-8).sqrt()


def depth_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, list[float]]:
    """Per-image RMSE, AbsRel and δ<1.25 over valid pixels; images without any are skipped."""
    out: dict[str, list[float]] = {"rmse": [], "abs_rel": [], "delta1": []}
    for p, t in zip(pred, target, strict=False):
        valid = t > 0
        if not valid.any():
            continue
        p, t = p[valid], t[valid]
        out["rmse"].append(float((p - t).pow(2).mean().sqrt()))
        out["abs_rel"].append(float(((p - t).abs() / t).mean()))
        out["delta1"].append(float((torch.maximum(p / t, t / p) < 1.25).float().mean() * 100))
    return out


def linear_depth(
    model: VisionTransformer,
    config: LinearDepthConfig,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """``rmse``, ``abs_rel`` and ``delta1`` of a linear depth head on last-layer tokens."""
    if not config.build(config.val_split, None).has_depth:
        raise EvalError(f"eval.{config.name}.dataset: {config.dataset} has no depth maps")
    train = extract(model, config, config.train_split, dense=True, cache=cache, progress=progress)
    assert train.patch is not None and train.depth is not None  # dense, of a dataset with depth
    max_depth = config.max_depth or float(train.depth.max())
    torch.manual_seed(config.seed)
    head = DepthHead(model.embed_dim, config, max_depth)

    def loss(h: DepthHead, cls: torch.Tensor, patch: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return silog(h(cls, patch, depth.shape[-2:]), depth)

    if config.cache_features:
        epoch = minibatches(
            (train.cls, train.patch, train.depth),
            config.batch_size,
            torch.Generator().manual_seed(config.seed),
        )
        per_epoch = steps_per_epoch(len(train.cls), config.batch_size)
    else:
        per_epoch, epoch = streamed(model, config, config.batch_size, "depth")
    fit(head, epoch, config.epochs * per_epoch, config.lr, config.weight_decay, loss)

    val = extract(model, config, config.val_split, dense=True, cache=cache, progress=progress)
    assert val.patch is not None and val.depth is not None
    per_image: dict[str, list[float]] = {"rmse": [], "abs_rel": [], "delta1": []}
    with torch.no_grad():
        for cls, patch, depth in zip(
            *(t.split(config.batch_size) for t in (val.cls, val.patch, val.depth)), strict=True
        ):
            for key, values in depth_scores(head(cls, patch, depth.shape[-2:]), depth).items():
                per_image[key].extend(values)
    if not per_image["rmse"]:
        raise EvalError(f"eval.{config.name}: no valid depth pixel in {config.dataset}/{config.val_split}")
    return {key: sum(v) / len(v) for key, v in per_image.items()}
