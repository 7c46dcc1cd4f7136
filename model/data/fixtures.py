"""Small datasets written in the exact on-disk layout of each real one (ImageNet folders, ADE20K, NYU
Depth V2, Cityscapes), so that the real loaders run where the real data is not at hand: a rehearsal
on a login node (model.rehearsal), tests. Images are seeded noise at the dataset's typical size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# (height, width) of a typical image of each dataset (Cityscapes at half its 1024x2048)
SIZES: dict[str, tuple[int, int]] = {
    "imagefolder": (375, 500),
    "ade20k": (512, 683),
    "nyu": (480, 640),
    "cityscapes": (512, 1024),
}
_DONE = ".fixture"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def _blocks(rng: np.random.Generator, size: tuple[int, int], low: int, high: int, dtype: type) -> np.ndarray:
    """A map of 8x8 constant regions (segments, surfaces) with values in [low, high)."""
    coarse: np.ndarray = rng.integers(low, high, (8, 8)).astype(dtype)
    rows, cols = np.arange(size[0]) * 8 // size[0], np.arange(size[1]) * 8 // size[1]
    return coarse[rows][:, cols]


def _imagefolder(root: Path, rng: np.random.Generator, images: int, num_classes: int) -> None:
    for split in ("train", "val"):
        for c in range(num_classes):
            for i in range(images):
                _save(root / split / f"n{c:08d}" / f"{split}_{c}_{i}.JPEG", _rgb(rng, SIZES["imagefolder"]))


def _ade20k(root: Path, rng: np.random.Generator, images: int, num_classes: int) -> None:
    base, size = root / "ADEChallengeData2016", SIZES["ade20k"]
    for split, prefix in (("training", "train"), ("validation", "val")):
        for i in range(images):
            _save(base / "images" / split / f"ADE_{prefix}_{i + 1:08d}.jpg", _rgb(rng, size))
            annotation = _blocks(rng, size, 0, 151, np.uint8)  # 0: "other", 1..150 the classes
            _save(base / "annotations" / split / f"ADE_{prefix}_{i + 1:08d}.png", annotation)


def _nyu(root: Path, rng: np.random.Generator, images: int, num_classes: int) -> None:
    size = SIZES["nyu"]
    for split_dir, scene in (("sync", "kitchen_0001"), ("official_splits/test", "bathroom")):
        for i in range(images):
            _save(root / split_dir / scene / f"rgb_{i:05d}.jpg", _rgb(rng, size))
            depth = _blocks(rng, size, 0, 10000, np.uint16)  # mm; values below 500 become 0, invalid
            depth = np.where(depth < 500, 0, depth).astype(np.uint16)
            _save(root / split_dir / scene / f"sync_depth_{i:05d}.png", depth)


def _cityscapes(root: Path, rng: np.random.Generator, images: int, num_classes: int) -> None:
    size = SIZES["cityscapes"]
    for split in ("train", "val"):
        for i in range(images):
            stem = f"aachen_{i:06d}_000019"
            _save(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", _rgb(rng, size))
            label_ids = _blocks(rng, size, 0, 34, np.uint8)
            _save(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png", label_ids)


WRITERS: dict[str, Callable[[Path, np.random.Generator, int, int], None]] = {
    "imagefolder": _imagefolder,
    "ade20k": _ade20k,
    "nyu": _nyu,
    "cityscapes": _cityscapes,
}


def write_fixture(
    name: str, root: str | Path, *, images: int = 2, num_classes: int = 2, seed: int = 0
) -> Path:
    """Write dataset ``name`` under ``root`` (``images`` per split, per class for ImageFolder) unless a
    complete one is there already; returns ``root``."""
    if name not in WRITERS:
        raise ValueError(f"no fixture for dataset {name!r}; fixtures: {', '.join(WRITERS)}")
    root = Path(root)
    if not (root / _DONE).exists():
        WRITERS[name](root, np.random.default_rng(seed), images, num_classes)
        (root / _DONE).touch()  # last, so that an interrupted write is redone
    return root
