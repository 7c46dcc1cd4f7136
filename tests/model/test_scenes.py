"""model.data.scenes: textured multi-object scenes, exact masks and labels, determinism, strict config."""

from __future__ import annotations

import pytest
import torch

from model.data import PATTERNS, ProceduralScenes, build_dataset, check_root
from model.experiment import check


def test_scenes_sample_contract_and_every_class_appears() -> None:
    ds = ProceduralScenes(size=200, resolution=32, period=4.0)
    labels, seen = [], set()
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
        assert s["mask"].shape == (32, 32) and s["mask"].dtype == torch.int64
        counts = torch.bincount(s["mask"].ravel(), minlength=11)
        # the label is the class with the most visible pixels (ties: the lower class)
        assert s["label"] == int(counts[1:].argmax()) and counts[s["label"] + 1] > 0
        labels.append(s["label"])
        seen |= set(s["mask"].unique().tolist())
    assert set(labels) == set(range(10)) and seen == set(range(11))
    assert ds.num_classes == 10 and ds.num_seg_classes == 11 and not ds.has_depth


def test_scenes_are_deterministic_by_seed_split_and_index() -> None:
    a, b = ProceduralScenes(size=8, resolution=24), ProceduralScenes(size=8, resolution=24)
    b[5]  # order of access does not matter
    for key in ("image", "mask"):
        assert torch.equal(a[3][key], b[3][key])
    assert not torch.equal(a[3]["image"], a[4]["image"])
    assert not torch.equal(a[3]["mask"], ProceduralScenes(size=8, resolution=24, seed=1)[3]["mask"])
    assert not torch.equal(a[3]["mask"], ProceduralScenes("val", size=8, resolution=24)[3]["mask"])


def test_scenes_masks_are_exact() -> None:
    """One object, no noise: inside its mask the image holds exactly its pattern's two colours, and
    outside the mask (the photographic background) neither colour appears."""
    ds = ProceduralScenes(size=20, num_classes=len(PATTERNS), resolution=32, objects=(1, 1), noise=0.0)
    for i in range(len(ds)):
        s = ds.load(i)
        image, mask = s["image"].permute(1, 2, 0).reshape(-1, 3), s["mask"].ravel()
        colours = torch.unique(image[mask > 0], dim=0)
        assert len(colours) == 2, i
        lightness = colours.float().mean(1) / 255
        assert abs(float(lightness[0] - lightness[1])) > 0.2
        outside = image[mask == 0]
        assert not (outside[:, None, :] == colours[None]).all(-1).any(), i


def test_scenes_class_is_the_texture_not_the_colour_or_shape() -> None:
    """Objects of one class differ in colour (so colour is no shortcut to the class)."""
    ds = ProceduralScenes(size=30, num_classes=1, resolution=32, objects=(1, 1), noise=0.0)
    means = torch.stack(
        [ds.load(i)["image"].permute(1, 2, 0)[ds.load(i)["mask"] > 0].float().mean(0) for i in range(len(ds))]
    )
    assert means.std(0).min() > 25  # uint8 units: the class's mean colour varies widely


def test_scenes_config_is_strict_and_needs_no_root() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ProceduralScenes(num_classes=len(PATTERNS) + 1)
    with pytest.raises(ValueError, match="objects"):
        ProceduralScenes(objects=(0, 2))
    with pytest.raises(ValueError, match="unknown config key"):
        build_dataset("scenes", size=4, object=(1, 2))
    check_root("scenes", None)
    cell = {
        "model": {"scale": "micro", "img_size": 32, "patch_size": 8},
        "framework": {"name": "supervised", "recipe": "cpu"},
        "data": {"name": "scenes", "resolution": 32, "objekts": [1, 2]},
        "train": {"steps": 10},
    }
    assert check(cell) == ["data.objekts: unknown key; did you mean 'objects'?"]
