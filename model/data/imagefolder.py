"""ImageNet-style ImageFolder (``root/{train,val}/<wnid>/*.JPEG``), for classification and pretraining."""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from model.data.base import (
    DatasetError,
    Sample,
    Transform,
    VisionDataset,
    raw_sample,
    require_dir,
    require_root,
)


class ImageFolderDataset(VisionDataset):
    """``torchvision.datasets.ImageFolder`` on ``root/<split>``, giving ``{image, label}`` samples.

    Labels index the sorted class folder names (``self.classes``), as torchvision does, so train and
    val agree as long as both hold the same class folders.
    """

    name = "imagefolder"

    def __init__(self, root: str | Path, split: str = "train", transform: Transform | None = None) -> None:
        super().__init__(split, transform)
        self.validate(root, split)
        try:
            self.folder = ImageFolder(str(Path(root).expanduser() / split), loader=default_loader)
        except FileNotFoundError as err:  # a class folder without any image
            raise DatasetError(self.name, root, str(err)) from None
        self.classes = self.folder.classes
        self.num_classes = len(self.classes)

    @classmethod
    def validate(cls, root: str | Path, split: str) -> None:
        """Cheap enough for plan time on a full ImageNet: looks at the first class folder only."""
        path = require_dir(cls.name, require_root(cls.name, root), split)
        first = next((e for e in sorted(os.scandir(path), key=lambda e: e.name) if e.is_dir()), None)
        if first is None:
            raise DatasetError(
                cls.name, root, f"{split}/ holds no class folders (expected {split}/<class>/<image>)"
            )
        if not any(e.name.lower().endswith(IMG_EXTENSIONS) for e in os.scandir(first.path)):
            raise DatasetError(cls.name, root, f"class folder {split}/{first.name} holds no image files")

    def __len__(self) -> int:
        return len(self.folder)

    def load(self, index: int) -> Sample:
        path, label = self.folder.samples[index]
        return raw_sample(self.folder.loader(path), label=label)
