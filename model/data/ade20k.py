"""ADE20K scene parsing, in the ``ADEChallengeData2016`` layout of the official release:

``ADEChallengeData2016/images/{training,validation}/ADE_*.jpg`` and
``ADEChallengeData2016/annotations/{training,validation}/ADE_*.png`` (8-bit class ids).

Annotation 0 ("other objects") becomes IGNORE_INDEX and 1..150 become 0..149, as in the
benchmark's protocol (mmseg's ``reduce_zero_label``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from model.data.base import (
    IGNORE_INDEX,
    DatasetError,
    Sample,
    Transform,
    VisionDataset,
    raw_sample,
    require_dir,
    require_root,
)

_SPLIT_DIRS = {"train": "training", "val": "validation"}


def _prefix(root: Path) -> str:
    """Accept the folder that contains ADEChallengeData2016 as well as ADEChallengeData2016 itself."""
    return "ADEChallengeData2016/" if (root / "ADEChallengeData2016").is_dir() else ""


class ADE20K(VisionDataset):
    """ADE20K SceneParsing (150 classes): ``{image, mask}`` samples."""

    name = "ade20k"
    num_seg_classes = 150

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        super().__init__(split, transform)
        self.validate(root, split)
        path = Path(root).expanduser()
        base, sub = path / _prefix(path), _SPLIT_DIRS[split]
        self.images = sorted((base / "images" / sub).glob("*.jpg"))
        self.annotations = [base / "annotations" / sub / f"{p.stem}.png" for p in self.images]
        missing = next((a for a in self.annotations if not a.is_file()), None)
        if not self.images:
            raise DatasetError(self.name, root, f"no .jpg images in images/{sub}")
        if missing is not None:
            raise DatasetError(self.name, root, f"missing annotation annotations/{sub}/{missing.name}")

    @classmethod
    def validate(cls, root: str | Path, split: str) -> None:
        path = require_root(cls.name, root)
        prefix = _prefix(path) or ("" if (path / "images").is_dir() else "ADEChallengeData2016/")
        for kind in ("images", "annotations"):
            require_dir(cls.name, path, f"{prefix}{kind}/{_SPLIT_DIRS[split]}")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        raw = np.asarray(PILImage.open(self.annotations[index]), dtype=np.int64)
        mask = np.where(raw == 0, IGNORE_INDEX, raw - 1)
        return raw_sample(PILImage.open(self.images[index]), mask=mask)
