"""model.data: the procedural dataset, the real-format loaders on tiny fixtures written in each
dataset's exact on-disk layout, the plan-time root check, and the transforms' alignment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from model.data import (
    ADE20K,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHAPES,
    Cityscapes,
    DatasetError,
    ImageFolderDataset,
    MultiCrop,
    NYUDepthV2,
    ProceduralShapes,
    build_dataset,
    check_root,
    dense_train,
    eval_transform,
    supervised_train,
)
from model.data.base import raw_sample
from model.data.procedural import _shape_mask


def _rgb(path: Path, colour: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _unnormalize(image: torch.Tensor) -> torch.Tensor:
    return image * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]


# --- procedural -------------------------------------------------------------------------------


def test_procedural_sample_contract() -> None:
    ds = ProceduralShapes(size=20, num_classes=4, resolution=32)
    for i in range(len(ds)):
        s = ds[i]
        assert s["image"].shape == (3, 32, 32) and s["image"].dtype == torch.float32
        assert 0 <= s["image"].min() and s["image"].max() <= 1 and s["image"].std() > 0.02
        assert 0 <= s["label"] < 4
        assert s["mask"].shape == (32, 32) and s["mask"].dtype == torch.int64
        assert set(s["mask"].unique().tolist()) <= set(range(5))
        assert s["label"] + 1 in s["mask"].unique().tolist()  # the dominant shape is visible
        assert s["depth"].shape == (32, 32) and s["depth"].dtype == torch.float32
        assert (s["depth"] > 0).all() and torch.isfinite(s["depth"]).all()
        # The labelled shape is in front of the background.
        assert s["depth"][s["mask"] == s["label"] + 1].mean() < s["depth"][s["mask"] == 0].mean()
    assert ds.num_classes == 4 and ds.num_seg_classes == 5 and ds.has_depth


def test_procedural_is_deterministic_by_seed_split_and_index() -> None:
    a, b = ProceduralShapes(size=8, resolution=24), ProceduralShapes(size=8, resolution=24)
    for key in ("image", "mask", "depth"):
        assert torch.equal(a[3][key], b[3][key])
    assert not torch.equal(a[3]["image"], a[4]["image"])
    assert not torch.equal(a[3]["image"], ProceduralShapes(size=8, resolution=24, seed=1)[3]["image"])
    assert not torch.equal(a[3]["image"], ProceduralShapes("val", size=8, resolution=24)[3]["image"])
    # Order of access does not matter (workers render items independently).
    assert torch.equal(ProceduralShapes(size=8, resolution=24)[3]["depth"], a[3]["depth"])


def test_procedural_labels_cover_the_classes_and_no_distractors_means_one_shape() -> None:
    ds = ProceduralShapes(size=60, num_classes=3, resolution=16, max_distractors=0)
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert set(labels) == {0, 1, 2}
    for i in range(10):
        assert set(ds[i]["mask"].unique().tolist()) == {0, ds[i]["label"] + 1}


def test_shape_classes_are_distinct() -> None:
    grid = np.linspace(-1.2, 1.2, 96, dtype=np.float32)
    masks = [_shape_mask(c, grid[None, :], grid[:, None]) for c in range(len(SHAPES))]
    for i, m in enumerate(masks):
        assert 0.1 < m.mean() < 0.7, SHAPES[i]
        for j in range(i):
            iou = (m & masks[j]).sum() / (m | masks[j]).sum()
            assert iou < 0.85, (SHAPES[i], SHAPES[j], iou)


def test_procedural_easy_variant_keeps_layout_and_makes_shapes_light_on_dark() -> None:
    """texture=0 + contrast (the quickstart's easy variant) only recolours: same draws, so the same
    labels, masks and depth as the default; flat fills, and every shape pixel is lighter than every
    background pixel (the sign-consistent edge a micro ViT learns within a CPU minute)."""
    plain, easy = (
        ProceduralShapes(size=6, resolution=32),
        ProceduralShapes(size=6, resolution=32, texture=0, contrast=True),
    )
    for i in range(6):
        a, b = plain[i], easy[i]
        assert (
            a["label"] == b["label"]
            and torch.equal(a["mask"], b["mask"])
            and torch.equal(a["depth"], b["depth"])
        )
        assert not torch.equal(a["image"], b["image"])
        image, mask = b["image"].float(), b["mask"][0] if b["mask"].ndim == 3 else b["mask"]
        image = image / 255 if b["image"].dtype == torch.uint8 else image
        assert image[:, mask == 0].max() <= 0.41 < 0.59 <= image[:, mask > 0].min()
        assert len(torch.unique(image[:, mask == 0], dim=1)[0]) == 1  # a flat background
    with pytest.raises(ValueError, match="texture"):
        ProceduralShapes(texture=1.5)


def test_procedural_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ProceduralShapes(num_classes=len(SHAPES) + 1)
    with pytest.raises(ValueError, match="split"):
        ProceduralShapes(split="training")
    with pytest.raises(IndexError):
        ProceduralShapes(size=3)[3]


def test_default_collate_batches_samples() -> None:
    batch = next(iter(DataLoader(ProceduralShapes(size=8, resolution=16), batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16)
    assert (
        batch["label"].shape == (4,)
        and batch["mask"].shape == (4, 16, 16)
        and batch["depth"].shape == (4, 16, 16)
    )


# --- real-format loaders on fixtures ------------------------------------------------------------


def test_imagefolder_reads_imagenet_layout(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _rgb(tmp_path / split / "n01440764" / f"{split}_1.JPEG", (250, 0, 0))
        _rgb(tmp_path / split / "n01443537" / f"{split}_2.JPEG", (0, 0, 250))
        _rgb(tmp_path / split / "n01443537" / f"{split}_3.JPEG", (0, 0, 250))
    ds = build_dataset("imagefolder", "val", root=tmp_path)
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 3
    assert ds.classes == ["n01440764", "n01443537"] and ds.num_classes == 2
    s = ds[0]
    assert s["label"] == 0 and s["image"].shape == (3, 16, 16)
    assert s["image"][0].mean() > 0.9 and s["image"][2].mean() < 0.1  # the red JPEG, decoded
    assert ds[2]["label"] == 1 and ds[2]["image"][2].mean() > 0.9


def _ade_fixture(root: Path) -> np.ndarray:
    ann = np.array([[0, 1, 150, 7]] * 4, dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    for split, prefix in (("training", "train"), ("validation", "val")):
        for n in (1, 2):
            _rgb(root / "ADEChallengeData2016" / "images" / split / f"ADE_{prefix}_{n:08d}.jpg", (0, 200, 0))
            _png(root / "ADEChallengeData2016" / "annotations" / split / f"ADE_{prefix}_{n:08d}.png", ann)
    return ann


def test_ade20k_reads_challenge_layout_and_shifts_labels(tmp_path: Path) -> None:
    ann = _ade_fixture(tmp_path)
    for root in (tmp_path, tmp_path / "ADEChallengeData2016"):  # either the parent or the folder itself
        ds = ADE20K(root, "val")
        assert len(ds) == 2 and ds.num_seg_classes == 150
        s = ds[1]
        assert set(s) == {"image", "mask"} and s["image"].shape == (3, 16, 16)
        expected = np.where(ann == 0, IGNORE_INDEX, ann.astype(np.int64) - 1)
        assert torch.equal(s["mask"], torch.from_numpy(expected))
        assert (
            s["mask"][0, :4].tolist() == [IGNORE_INDEX] * 4
            and s["mask"][0, 4] == 0
            and s["mask"][0, 8] == 149
        )


def test_ade20k_missing_annotation_is_named(tmp_path: Path) -> None:
    _ade_fixture(tmp_path)
    (tmp_path / "ADEChallengeData2016/annotations/training/ADE_train_00000002.png").unlink()
    with pytest.raises(DatasetError, match="missing annotation annotations/training/ADE_train_00000002.png"):
        ADE20K(tmp_path, "train")


def _nyu_fixture(root: Path) -> np.ndarray:
    depth_mm = np.array([[0, 1000, 2500, 10000]] * 4, dtype=np.uint16).repeat(4, axis=0).repeat(4, axis=1)
    for split_dir, scene in (("sync", "kitchen_0028b"), ("official_splits/test", "bathroom")):
        for n in (45, 46):
            _rgb(root / split_dir / scene / f"rgb_{n:05d}.jpg", (128, 128, 128))
            _png(root / split_dir / scene / f"sync_depth_{n:05d}.png", depth_mm)
    return depth_mm


def test_nyu_reads_bts_layout_in_metres(tmp_path: Path) -> None:
    _nyu_fixture(tmp_path)
    for split in ("train", "val"):
        ds = NYUDepthV2(tmp_path, split)
        assert len(ds) == 2 and ds.has_depth
        s = ds[0]
        assert set(s) == {"image", "depth"} and s["depth"].dtype == torch.float32
        assert s["depth"][0, ::4].tolist() == [0.0, 1.0, 2.5, 10.0]  # mm -> m, 0 stays invalid
    assert NYUDepthV2(tmp_path, "val").images[0].parent.name == "bathroom"


def test_nyu_rejects_missing_or_8bit_depth(tmp_path: Path) -> None:
    _nyu_fixture(tmp_path)
    _png(tmp_path / "sync/kitchen_0028b/sync_depth_00046.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError, match="not a 16-bit depth PNG"):
        NYUDepthV2(tmp_path, "train")[1]
    (tmp_path / "official_splits/test/bathroom/sync_depth_00045.png").unlink()
    with pytest.raises(
        DatasetError, match="missing depth official_splits/test/bathroom/sync_depth_00045.png"
    ):
        NYUDepthV2(tmp_path, "val")


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    # labelIds: 0 unlabeled, 7 road, 24 person, 26 car -> trainIds 255, 0, 11, 13.
    ids = np.array([[0, 7, 24, 26]] * 4, dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    stem = "aachen_000000_000019"
    _rgb(tmp_path / "leftImg8bit/train/aachen" / f"{stem}_leftImg8bit.png", (10, 20, 30))
    _png(tmp_path / "gtFine/train/aachen" / f"{stem}_gtFine_labelIds.png", ids)
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 1 and ds.num_seg_classes == 19
    assert ds[0]["mask"][0, ::4].tolist() == [IGNORE_INDEX, 0, 11, 13]


# --- plan-time root check and registry ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("imagefolder", "missing directory train"),
        ("ade20k", "missing directory ADEChallengeData2016/images/training"),
        ("nyu", "missing directory sync"),
        ("cityscapes", "missing directory leftImg8bit/train"),
    ],
)
def test_check_root_names_dataset_path_and_what_is_missing(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DatasetError) as err:
        check_root(name, tmp_path)
    assert str(err.value) == f"{name} root {tmp_path}: {expected}"
    with pytest.raises(DatasetError, match=f"^{name} root {tmp_path / 'nope'}: does not exist$"):
        check_root(name, tmp_path / "nope")


def test_check_root_catches_half_layouts(tmp_path: Path) -> None:
    _ade_fixture(tmp_path)
    check_root("ade20k", tmp_path)
    for f in (tmp_path / "ADEChallengeData2016/annotations/validation").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="directory ADEChallengeData2016/annotations/validation is empty"):
        check_root("ade20k", tmp_path)
    check_root("ade20k", tmp_path, splits=["train"])

    (tmp_path / "in/train/n01").mkdir(parents=True)
    (tmp_path / "in/train/n01/readme.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="class folder train/n01 holds no image files"):
        check_root("imagefolder", tmp_path / "in", splits=["train"])
    with pytest.raises(DatasetError, match="is not a directory"):
        check_root("nyu", tmp_path / "in/train/n01/readme.txt")
    check_root("procedural", None)


def test_registry_errors_list_what_is_known() -> None:
    with pytest.raises(
        ValueError, match="unknown dataset 'imagenet'; known: ade20k, cityscapes, imagefolder, nyu"
    ):
        build_dataset("imagenet")
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['res'\]"):
        build_dataset("procedural", res=32)
    ds = build_dataset("procedural", "val", size=5, resolution=16, num_classes=2)
    assert len(ds) == 5 and ds.num_classes == 2 and ds.split == "val"


# --- transforms -----------------------------------------------------------------------------


def test_dense_transform_keeps_image_mask_and_depth_aligned() -> None:
    """An image that *is* its mask (white on shapes, black elsewhere) must stay equal to the
    transformed mask; depth, encoded from the mask, must stay exact (nearest, no blending)."""
    shapes = ProceduralShapes(size=6, resolution=64, num_classes=5)
    transform = dense_train(48, jitter=0.0)
    flipped = 0
    for i in range(len(shapes)):
        mask = shapes.load(i)["mask"].numpy()
        image = np.repeat(((mask > 0) * 255).astype(np.uint8)[..., None], 3, axis=2)
        torch.manual_seed(i)
        sample = transform(raw_sample(image, mask=mask, depth=mask.astype(np.float32) + 1))
        img, m, d = (sample[k].as_subclass(torch.Tensor) for k in ("image", "mask", "depth"))
        assert img.shape == (3, 48, 48) and m.shape == (48, 48) and d.shape == (48, 48)
        assert set(m.unique().tolist()) <= set(np.unique(mask).tolist())  # nearest: no new labels
        assert torch.equal(d, m.float() + 1)
        white = _unnormalize(img).mean(0) > 0.5
        assert (white == (m > 0)).float().mean() > 0.95
        flipped += int(not torch.equal(m, torch.flip(m, [1])))
    assert flipped  # not trivially symmetric masks


def test_horizontal_flip_moves_image_and_mask_together() -> None:
    from torchvision.transforms import v2

    image = np.zeros((8, 8, 3), np.uint8)
    image[:, :2] = 255
    mask = np.zeros((8, 8), np.int64)
    mask[:, :2] = 3
    out = v2.RandomHorizontalFlip(p=1.0)(raw_sample(image, mask=mask, depth=mask.astype(np.float32)))
    assert (out["image"][:, :, -2:] == 255).all() and (out["image"][:, :, :-2] == 0).all()
    assert (out["mask"][:, -2:] == 3).all() and (out["mask"][:, :-2] == 0).all()
    assert torch.equal(out["depth"].as_subclass(torch.Tensor), out["mask"].float())


def test_multicrop_gives_globals_then_locals_and_collates_to_a_list_of_batches() -> None:
    ds = ProceduralShapes(size=4, resolution=32, transform=MultiCrop(32, 16, n_local=3))
    s = ds[0]
    assert [tuple(c.shape) for c in s["image"]] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert set(s) == {"image", "label"} and all(type(c) is torch.Tensor for c in s["image"])
    assert not torch.equal(s["image"][0], s["image"][1])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert len(batch["image"]) == 5 and batch["image"][2].shape == (4, 3, 16, 16)


def test_supervised_and_eval_pipelines_normalise_to_the_requested_size() -> None:
    ds = ProceduralShapes(size=32, resolution=40, transform=supervised_train(32))
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
    assert images.mean().abs() < 1.0 and 0.3 < images.std() < 2.0  # normalised, not [0, 1]
    ev = ProceduralShapes(size=2, resolution=40, transform=eval_transform(32))
    assert torch.equal(ev[1]["image"], ev[1]["image"])  # eval is deterministic
    assert ev[1]["image"].shape == (3, 32, 32) and ev[1]["mask"].shape == (32, 32)
