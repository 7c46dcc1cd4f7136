"""iBOT / DINOv2 block masking of the global crops' patch tokens, drawn per batch.

As DINOv2's ``collate_data_and_cast`` does per process, in the data workers: of the batch's
global crops, a share ``probability`` is masked with ratios stratified over ``ratio`` (so every
batch spans the range), the masks are shuffled over the crops, and each is made of BEiT-style
blocks. The random stream is seeded by a draw of each sample's own seeded stream (``mask_seed``,
model.train seeds each sample by its position), so the masks do not depend on the data workers or
a resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import default_collate

from model.data import Sample


def block_mask(
    height: int,
    width: int,
    num_masking: int,
    rng: np.random.Generator,
    min_patches: int = 4,
    max_patches: float | None = None,
    min_aspect: float = 0.3,
) -> np.ndarray:
    """DINOv2's MaskingGenerator: add random rectangles of ``min_patches`` to ``max_patches``
    patches (log-uniform aspect ratio in [min_aspect, 1 / min_aspect], 10 tries each) until
    ``num_masking`` of the ``height``×``width`` patches are masked or no rectangle fits."""
    mask = np.zeros((height, width), dtype=bool)
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    cap = num_masking if max_patches is None else max_patches
    count = 0
    while count < num_masking:
        budget = min(num_masking - count, cap)
        added = 0
        for _ in range(10):
            area = min_patches + (budget - min_patches) * rng.random()  # random.uniform: budget may be lower
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h < height and w < width:
                top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                region = mask[top : top + h, left : left + w]
                new = h * w - int(region.sum())
                if 0 < new <= budget:
                    region[...] = True
                    added = new
                    break
        if added == 0:
            break
        count += added
    return mask


def batch_masks(
    n_images: int,
    grid: tuple[int, int],
    probability: float,
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> torch.Tensor:
    """Masks (``n_images`` × patches, bool) of a batch's global crops: ``int(n_images *
    probability)`` masked, the i-th of them with a ratio uniform in the i-th of as many equal bins
    of ``ratio``, ``int(patches * ratio)`` patches in blocks of at most half the patches (DINOv2's
    ``max_num_patches``); the rest unmasked; shuffled over the crops."""
    h, w = grid
    patches = h * w
    masked = int(n_images * probability)
    edges = np.linspace(*ratio, masked + 1)
    masks = np.zeros((n_images, patches), dtype=bool)
    for i in range(masked):
        count = int(patches * rng.uniform(edges[i], edges[i + 1]))
        masks[i] = block_mask(h, w, count, rng, max_patches=0.5 * patches).reshape(-1)
    rng.shuffle(masks)
    return torch.from_numpy(masks)


def add_mask_seed(sample: Sample) -> Sample:
    """The last transform step: a draw of the sample's seeded stream, for :class:`CollateMasks`."""
    return {**sample, "mask_seed": int(torch.randint(2**62, ()))}


class CollateMasks:
    """default_collate, plus ``ibot_mask`` (2B × patches, bool; rows in the order of the 2B global
    crops, crop-major as the frameworks concatenate them): :func:`batch_masks` over the batch,
    seeded by its samples' ``mask_seed``."""

    def __init__(self, grid: tuple[int, int], probability: float, ratio: tuple[float, float]) -> None:
        self.grid, self.probability, self.ratio = grid, probability, ratio

    def __call__(self, samples: list[Sample]) -> Sample:
        seeds = [int(s["mask_seed"]) for s in samples]
        batch = default_collate([{k: v for k, v in s.items() if k != "mask_seed"} for s in samples])
        n_global = 2 * len(samples)
        batch["ibot_mask"] = batch_masks(
            n_global, self.grid, self.probability, self.ratio, np.random.default_rng(seeds)
        )
        return batch
