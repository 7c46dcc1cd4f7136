"""Datasets by name, and the plan-time root check the orchestrator runs before submitting anything."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from model.data.ade20k import ADE20K
from model.data.base import Transform, VisionDataset
from model.data.cityscapes import Cityscapes
from model.data.imagefolder import ImageFolderDataset
from model.data.nyu import NYUDepthV2
from model.data.procedural import ProceduralShapes
from model.data.scenes import ProceduralScenes

DATASETS: dict[str, type[VisionDataset]] = {
    "procedural": ProceduralShapes,
    "scenes": ProceduralScenes,
    "imagefolder": ImageFolderDataset,
    "ade20k": ADE20K,
    "nyu": NYUDepthV2,
    "cityscapes": Cityscapes,
}


def dataset_class(name: str) -> type[VisionDataset]:
    """The class registered as ``name``; a ValueError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def build_dataset(
    name: str, split: str = "train", transform: Transform | None = None, **cfg: Any
) -> VisionDataset:
    """Build dataset ``name`` from its config keys (``root`` for the real ones; see each class)."""
    cls = dataset_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "split", "transform"}
    unknown = sorted(set(cfg) - accepted)
    if unknown:
        raise ValueError(f"{name}: unknown config key(s) {unknown}; accepted: {sorted(accepted)}")
    return cls(split=split, transform=transform, **cfg)


def check_root(name: str, root: str | Path | None, splits: Iterable[str] = ("train", "val")) -> None:
    """Raise DatasetError (one message: dataset, path, what was expected) if ``root`` cannot serve
    ``splits``. Cheap (no full listing), so the CLI can run it for every dataset of a study at plan
    time. The procedural datasets need no root."""
    cls = dataset_class(name)
    if not cls.needs_root:
        return
    if root is None:
        raise ValueError(f"{name}: no root given; set the dataset's root to its directory")
    for split in splits:
        if split not in cls.splits:
            raise ValueError(f"{name}: unknown split {split!r}; expected one of {list(cls.splits)}")
        cls.validate(root, split)
