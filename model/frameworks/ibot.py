"""iBOT: DINO plus masked patch-token self-distillation.

The student sees the global crops with block-masked patch embeddings replaced by a learnable mask
token; an iBOT head on its patch tokens (never the CLS or register tokens) learns the teacher's
output for the same, unmasked view at the masked positions. The head is the DINO head unless
``ibot_separate_head`` (DINOv2's default shares it; its L/14 and g/14 recipes separate it).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from model.config import Strict
from model.frameworks.dino import DINO, DINOOptions


class IBOTOptions(DINOOptions):
    ibot_weight: float = Field(1.0, ge=0)
    ibot_separate_head: bool = False  # False: the DINO head serves the patch tokens too (DINOv2)
    ibot_out_dim: int | None = Field(None, ge=1)  # separate head only; None: the DINO head's size
    ibot_hidden_dim: int | None = Field(None, ge=1)
    ibot_bottleneck_dim: int | None = Field(None, ge=1)
    mask_probability: float = Field(0.5, ge=0, le=1)  # share of a batch's global crops that get masked
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # of the patches, stratified over the masked crops


class IBOT(DINO):
    name = "ibot"
    Options: ClassVar[type[Strict]] = IBOTOptions
