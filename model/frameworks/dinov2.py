"""DINOv2: DINO + iBOT + the KoLeo regulariser on the student's CLS features, LayerScale 1e-5;
``centering: sinkhorn`` selects Sinkhorn-Knopp targets instead of centering."""

from __future__ import annotations

from pydantic import Field

from model.frameworks.ibot import IBOT, IBOTOptions


class DINOv2Options(IBOTOptions):
    koleo_weight: float = Field(0.1, ge=0)


class DINOv2(IBOT):
    name = "dinov2"
    Options = DINOv2Options
