"""The sample contract every dataset in model.data honours, and the error a user's wrong path raises.

A sample is a plain ``dict`` (so torch's default collate batches it with no custom code):

- ``image``: float32 tensor C×H×W (in [0, 1], or normalised when the transform normalises);
  a list of such tensors after a multi-crop transform;
- ``label``: int, where the dataset has image-level labels;
- ``mask``: int64 H×W class ids, ``IGNORE_INDEX`` (255) for unlabeled pixels;
- ``depth``: float32 H×W metres, 0 where the depth is unknown (``valid = depth > 0``).
  Zero, not NaN, so that sums and reductions over a batch never turn into NaN; evaluations mask
  with ``depth > 0``.

Inside a dataset, before the transform runs, ``image`` is a uint8 ``tv_tensors.Image`` and ``mask``
and ``depth`` are ``tv_tensors.Mask``: torchvision v2 then applies one geometric transform to all
three, resamples mask *and depth* with nearest (a valid depth is never averaged with an invalid 0)
and leaves both out of photometric transforms. ``finalize`` turns the result into plain tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset
from torchvision import tv_tensors

IGNORE_INDEX = 255

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]


class DatasetError(ValueError):
    """A dataset root that is missing or not in the expected layout; its message is for the user."""

    def __init__(self, dataset: str, root: str | Path, problem: str) -> None:
        self.dataset, self.root, self.problem = dataset, str(root), problem
        super().__init__(f"{dataset} root {root}: {problem}")


def require_root(dataset: str, root: str | Path) -> Path:
    """``root`` as a Path if it is an existing directory, else the DatasetError saying so."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(dataset, root, "does not exist")
    if not path.is_dir():
        raise DatasetError(dataset, root, "is not a directory")
    return path


def require_dir(dataset: str, root: Path, rel: str) -> Path:
    """``root/rel`` if it is a non-empty directory, else the DatasetError that names what is wrong."""
    path = root / rel
    if not path.is_dir():
        raise DatasetError(dataset, root, f"missing directory {rel}")
    if next(path.iterdir(), None) is None:
        raise DatasetError(dataset, root, f"directory {rel} is empty")
    return path


def raw_sample(image: np.ndarray | PILImage.Image, **targets: Any) -> Sample:
    """Wrap an RGB image (H×W×3 uint8 or PIL) and its targets as v2 tv_tensors, ready for a transform."""
    array = np.asarray(image.convert("RGB") if isinstance(image, PILImage.Image) else image)
    sample: Sample = {
        "image": tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
    }
    for key, value in targets.items():
        sample[key] = tv_tensors.Mask(torch.from_numpy(value)) if isinstance(value, np.ndarray) else value
    return sample


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.as_subclass(torch.Tensor)
        return value.float().div_(255) if value.dtype == torch.uint8 else value
    return value


def finalize(sample: Sample) -> Sample:
    """Plain tensors out: uint8 images become float in [0, 1]; tv_tensor wrappers are dropped."""
    return {key: _plain(value) for key, value in sample.items()}


class VisionDataset(Dataset):
    """Base for every dataset here: load a raw sample, apply the transform, finalize.

    Subclasses set what they provide (``num_classes`` for image labels, ``num_seg_classes`` for
    masks, ``has_depth``) so that an evaluation can check it is given a dataset it can use, and
    implement ``validate`` so that a wrong root fails at plan time, before any job is submitted.
    """

    name: ClassVar[str]
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    num_classes: int | None = None
    num_seg_classes: int | None = None
    has_depth: bool = False
    needs_root: ClassVar[bool] = True  # False: generated data (no ``root`` key, no plan-time check)

    def __init__(self, split: str, transform: Transform | None) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {list(self.splits)}")
        self.split = split
        self.transform = transform

    @classmethod
    def validate(cls, root: str | Path, split: str) -> None:
        """Raise DatasetError if ``root`` does not hold ``split`` in this dataset's layout."""
        raise NotImplementedError

    def load(self, index: int) -> Sample:
        """The untransformed sample (see the module docstring for its types)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample)
        return finalize(sample)
