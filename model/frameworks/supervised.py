"""DeiT-III style supervised training: 3-Augment, LayerScale, binary cross-entropy (or CE).

Option defaults are DeiT-III's (crop scale 0.08-1, jitter 0.3, BCE, LayerScale 1e-4); the
``cpu`` recipe scales them down for small data. Not implemented: Mixup/CutMix (with BCE's
binarised targets) and repeated augmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import v2

from model.config import Strict
from model.data import Sample, Transform, supervised_train
from model.frameworks.base import Framework, KeepKeys, build_backbone


class SupervisedOptions(Strict):
    """Defaults are DeiT-III's ImageNet-1k pretraining; the ``cpu`` recipe holds the small-data ones."""

    loss: Literal["bce", "ce"] = "bce"  # DeiT-III trains ImageNet-1k with BCE
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # CE only
    layerscale: float | None = Field(1e-4, gt=0)  # LayerScale init (timm init_values); None: none
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: float = Field(0.3, ge=0)


class Supervised(Framework):
    """A ViT with its classifier head, trained on image labels."""

    name = "supervised"
    Options = SupervisedOptions

    def __init__(self, model_cfg: Mapping[str, Any], opts: SupervisedOptions, *,
                 num_classes: int | None, total_steps: int, steps_per_epoch: float | None = None) -> None:
        super().__init__()
        if not num_classes:
            raise ValueError("framework supervised: the dataset has no image labels (num_classes)")
        self.opts = opts
        self.num_classes = num_classes
        self.img_size = model_cfg.get("img_size", 32)
        self.vit = build_backbone(model_cfg, num_classes=num_classes, init_values=opts.layerscale)

    def train_transform(self) -> Transform:
        return v2.Compose([supervised_train(self.img_size, scale=tuple(self.opts.crop_scale),
                                            jitter=self.opts.jitter), KeepKeys("image", "label")])

    def forward(self, batch: Sample, step: int) -> dict[str, torch.Tensor]:
        logits = self.vit(batch["image"]).float()
        labels = batch["label"]
        if self.opts.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, self.num_classes).float())
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.opts.label_smoothing)
        return {"loss": loss}

    def backbone(self) -> VisionTransformer:
        return self.vit
