"""iBOT block masking of patch tokens, per sample, as a transform step.

Masks are drawn in the data pipeline from the sample's own random stream (model.train seeds
each sample), so they do not depend on the rank, the worker or a resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from model.data import Sample


def block_mask(height: int, width: int, num_masking: int, rng: np.random.Generator,
               min_patches: int = 4, min_aspect: float = 0.3) -> np.ndarray:
    """BEiT/iBOT's MaskingGenerator: add random rectangles (log-uniform aspect ratio) until about
    ``num_masking`` of the ``height``×``width`` patches are masked."""
    mask = np.zeros((height, width), dtype=bool)
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    count = 0
    while count < num_masking:
        budget = num_masking - count
        added = 0
        for _ in range(10):
            area = rng.uniform(min(min_patches, budget), budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                region = mask[top:top + h, left:left + w]
                new = h * w - int(region.sum())
                if 0 < new <= budget:
                    region[...] = True
                    added = new
                    break
        if added == 0:
            break
        count += added
    return mask


class AddBlockMasks:
    """Adds ``ibot_mask`` (n_global × patches, bool) to a multi-crop sample: each global crop is
    masked with probability ``probability``, with a ratio uniform in ``ratio`` (DINOv2 defaults)."""

    def __init__(self, grid: tuple[int, int], n_global: int = 2, probability: float = 0.5,
                 ratio: tuple[float, float] = (0.1, 0.5)) -> None:
        self.grid, self.n_global, self.probability, self.ratio = grid, n_global, probability, ratio

    def __call__(self, sample: Sample) -> Sample:
        rng = np.random.default_rng(int(torch.randint(2**62, ())))  # the sample's seeded stream
        h, w = self.grid
        masks = np.zeros((self.n_global, h * w), dtype=bool)
        for i in range(self.n_global):
            if rng.random() < self.probability:
                masks[i] = block_mask(h, w, round(rng.uniform(*self.ratio) * h * w), rng).reshape(-1)
        return {**sample, "ibot_mask": torch.from_numpy(masks)}
