"""iBOT: DINO plus masked patch-token self-distillation.

The student sees the global crops with block-masked patch embeddings replaced by a learnable mask
token; an iBOT head on its patch tokens (never the CLS or register tokens) learns the teacher's
output for the same, unmasked view at the masked positions. The head is separate from the DINO
head, as in DINOv2.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.frameworks.dino import DINO, DINOOptions


@dataclass(frozen=True)
class IBOTOptions(DINOOptions):
    ibot_weight: float = 1.0
    ibot_out_dim: int | None = None  # None: out_dim
    mask_probability: float = 0.5  # share of global crops that get masked
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # of the patches, uniform per masked crop


class IBOT(DINO):
    name = "ibot"
    Options = IBOTOptions
    dense_loss = True
