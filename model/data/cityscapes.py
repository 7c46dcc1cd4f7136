"""Cityscapes fine annotations (``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
``gtFine/<split>/<city>/*_gtFine_labelIds.png``), labelIds mapped to the 19 trainIds, others ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision import datasets

from model.data.base import (
    IGNORE_INDEX,
    Sample,
    Transform,
    VisionDataset,
    raw_sample,
    require_dir,
    require_root,
)

# labelId -> trainId lookup table, from the official class table that torchvision carries.
TRAIN_IDS = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _c in datasets.Cityscapes.classes:
    if 0 <= _c.id < 256 and 0 <= _c.train_id < IGNORE_INDEX:
        TRAIN_IDS[_c.id] = _c.train_id


class Cityscapes(VisionDataset):
    """Cityscapes semantic segmentation (19 classes) over ``torchvision.datasets.Cityscapes``."""

    name = "cityscapes"
    num_seg_classes = 19

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        super().__init__(split, transform)
        self.validate(root, split)
        self.base = datasets.Cityscapes(
            str(Path(root).expanduser()), split=split, mode="fine", target_type="semantic"
        )

    @classmethod
    def validate(cls, root: str | Path, split: str) -> None:
        path = require_root(cls.name, root)
        require_dir(cls.name, path, f"leftImg8bit/{split}")
        require_dir(cls.name, path, f"gtFine/{split}")

    def __len__(self) -> int:
        return len(self.base)

    def load(self, index: int) -> Sample:
        image, target = self.base[index]
        return raw_sample(image, mask=TRAIN_IDS[np.asarray(target)])
