"""NYU Depth V2 in the layout of BTS (also read by DINOv2's and Depth Anything's depth evaluations):

- train: ``root/sync/<scene>/rgb_<n>.jpg`` with ``root/sync/<scene>/sync_depth_<n>.png``;
- val (the official 654-image test split): ``root/official_splits/test/<scene>/rgb_<n>.jpg`` with
  ``sync_depth_<n>.png`` beside it.

Depth PNGs are 16-bit millimetres; samples carry metres, 0 where the sensor gave nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from model.data.base import (
    DatasetError,
    Sample,
    Transform,
    VisionDataset,
    raw_sample,
    require_dir,
    require_root,
)

_SPLIT_DIRS = {"train": "sync", "val": "official_splits/test"}
MM_PER_M = 1000.0


class NYUDepthV2(VisionDataset):
    """NYU Depth V2 (BTS layout): ``{image, depth}`` samples, depth in metres."""

    name = "nyu"
    has_depth = True

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        super().__init__(split, transform)
        self.validate(root, split)
        self.root = Path(root).expanduser()
        base = self.root / _SPLIT_DIRS[split]
        self.images = sorted(base.glob("*/rgb_*.jpg"))
        self.depths = [p.with_name(f"sync_depth_{p.stem.removeprefix('rgb_')}.png") for p in self.images]
        if not self.images:
            raise DatasetError(self.name, root, f"no {_SPLIT_DIRS[split]}/<scene>/rgb_*.jpg images")
        missing = next((d for d in self.depths if not d.is_file()), None)
        if missing is not None:
            raise DatasetError(self.name, root, f"missing depth {missing.relative_to(self.root)}")

    @classmethod
    def validate(cls, root: str | Path, split: str) -> None:
        require_dir(cls.name, require_root(cls.name, root), _SPLIT_DIRS[split])

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        path = self.depths[index]
        raw = PILImage.open(path)
        if raw.mode not in ("I;16", "I"):
            raise DatasetError(
                self.name, self.root, f"{path.relative_to(self.root)} is not a 16-bit depth PNG"
            )
        depth = np.asarray(raw, dtype=np.float32) / MM_PER_M
        return raw_sample(PILImage.open(self.images[index]), depth=depth)
