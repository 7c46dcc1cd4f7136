"""DeiT-III style supervised training: 3-Augment, LayerScale, Mixup / CutMix, binary cross-entropy.

Option defaults are DeiT-III's ImageNet-1k pretraining (crop scale 0.08-1 with bicubic resizing,
jitter 0.3, Mixup 0.8 / CutMix 1.0 through timm's ``Mixup``, BCE on binarised mixed targets,
LayerScale 1e-4); the ``cpu`` recipe scales them down for small data. Repeated augmentation is a
property of the data stream (``train.repeated_aug``, model.train).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from timm.data import Mixup
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import v2

from model.config import Strict
from model.data import Sample, Transform, supervised_train
from model.frameworks.base import Framework, KeepKeys, build_backbone


class SupervisedOptions(Strict):
    """Defaults are DeiT-III's ImageNet-1k pretraining; the ``cpu`` recipe holds the small-data ones."""

    loss: Literal["bce", "ce"] = "bce"  # DeiT-III trains ImageNet-1k with BCE
    mixup: float = Field(0.8, ge=0)  # Mixup's Beta alpha; 0: off
    cutmix: float = Field(1.0, ge=0)  # CutMix's Beta alpha; 0: off (both on: one per batch, p 0.5)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # of the (mixed) targets; BCE needs 0
    layerscale: float | None = Field(1e-4, gt=0)  # LayerScale init (timm init_values); None: none
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"  # of the random resized crop
    jitter: float = Field(0.3, ge=0)

    @field_validator("label_smoothing")
    @classmethod
    def _bce_without_smoothing(cls, value: float, info: ValidationInfo) -> float:
        mixed = info.data.get("mixup") or info.data.get("cutmix")
        if value > 0 and info.data.get("loss") == "bce" and mixed:
            raise ValueError(
                "0 with loss bce and mixup or cutmix (binarised, smoothed targets make "
                "every class a positive)"
            )
        return value


@contextmanager
def _numpy_seeded_from_torch() -> Iterator[None]:
    """timm's Mixup draws from numpy's global RNG: seed it from torch's (which model.train seeds
    from the seed and the step) for the call, so that a resumed run mixes the same way."""
    state = np.random.get_state()
    np.random.seed(int(torch.randint(2**32, ())))
    try:
        yield
    finally:
        np.random.set_state(state)


class Supervised(Framework):
    """A ViT with its classifier head, trained on image labels."""

    name = "supervised"
    Options = SupervisedOptions

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        opts: SupervisedOptions,
        *,
        num_classes: int | None,
        total_steps: int,
        steps_per_epoch: float | None = None,
    ) -> None:
        super().__init__()
        if not num_classes:
            raise ValueError("framework supervised: the dataset has no image labels (num_classes)")
        self.opts = opts
        self.num_classes = num_classes
        self.img_size = model_cfg.get("img_size", 32)
        self.vit = build_backbone(model_cfg, num_classes=num_classes, init_values=opts.layerscale)
        # DeiT-III's main.py: per batch, prob 1, mixup or cutmix with p 0.5, lam corrected for cutmix
        self.mixup = (
            Mixup(
                mixup_alpha=opts.mixup,
                cutmix_alpha=opts.cutmix,
                label_smoothing=opts.label_smoothing,
                num_classes=num_classes,
            )
            if opts.mixup or opts.cutmix
            else None
        )

    def train_transform(self) -> Transform:
        crop = supervised_train(
            self.img_size,
            scale=self.opts.crop_scale,
            jitter=self.opts.jitter,
            interpolation=self.opts.interpolation,
        )
        return v2.Compose([crop, KeepKeys("image", "label")])

    def targets(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, soft targets): mixed by timm's Mixup when on, else one-hot (smoothed for CE)."""
        if self.mixup is not None:
            if len(images) % 2:
                raise ValueError(
                    f"framework.mixup / cutmix: timm's Mixup needs an even batch per process; "
                    f"got {len(images)}"
                )
            with _numpy_seeded_from_torch():
                return self.mixup(images, labels)
        smoothing = self.opts.label_smoothing if self.opts.loss == "ce" else 0.0
        off = smoothing / self.num_classes
        return images, F.one_hot(labels, self.num_classes).float() * (1 - smoothing) + off

    def forward(self, batch: Sample, step: int) -> dict[str, torch.Tensor]:
        images, targets = self.targets(batch["image"], batch["label"])
        logits = self.vit(images).float()
        if self.opts.loss == "bce":  # DeiT-III's engine.py: both mixed classes become positives
            loss = F.binary_cross_entropy_with_logits(logits, targets.gt(0.0).float())
        else:  # timm's SoftTargetCrossEntropy
            loss = F.cross_entropy(logits, targets)
        return {"loss": loss}

    def backbone(self) -> VisionTransformer:
        return self.vit
