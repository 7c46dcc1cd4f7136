"""Pretraining frameworks behind one interface (model.frameworks.base.Framework)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.frameworks.base import Framework, cosine_schedule
from model.frameworks.dino import DINO
from model.frameworks.dinov2 import DINOv2
from model.frameworks.ibot import IBOT
from model.frameworks.supervised import Supervised

FRAMEWORKS: dict[str, type[Framework]] = {
    "supervised": Supervised,
    "deit3": Supervised,
    "dino": DINO,
    "ibot": IBOT,
    "dinov2": DINOv2,
}


def framework_class(name: str) -> type[Framework]:
    """The framework registered as ``name``; a ValueError listing the known names otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValueError(
            f"framework.name: unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}"
        ) from None


def build_framework(
    model_cfg: Mapping[str, Any],
    framework_cfg: Mapping[str, Any],
    *,
    num_classes: int | None,
    total_steps: int,
    steps_per_epoch: float | None = None,
) -> Framework:
    """Build the framework named by ``framework_cfg['name']`` (default dinov2) with its options."""
    cls = framework_class(framework_cfg.get("name", "dinov2"))
    return cls.from_config(
        model_cfg,
        framework_cfg,
        num_classes=num_classes,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )


__all__ = [
    "DINO",
    "FRAMEWORKS",
    "IBOT",
    "DINOv2",
    "Framework",
    "Supervised",
    "build_framework",
    "cosine_schedule",
    "framework_class",
]
