"""DINOv2: DINO + iBOT + the KoLeo regulariser on the student's CLS features, LayerScale 1e-5;
``centering: sinkhorn`` selects Sinkhorn-Knopp targets instead of centering."""

from __future__ import annotations

from dataclasses import dataclass

from model.frameworks.ibot import IBOT, IBOTOptions


@dataclass(frozen=True)
class DINOv2Options(IBOTOptions):
    koleo_weight: float = 0.1
    layerscale: float | None = 1e-5


class DINOv2(IBOT):
    name = "dinov2"
    Options = DINOv2Options
