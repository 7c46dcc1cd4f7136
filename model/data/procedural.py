"""A procedural dataset that needs no download and serves every evaluation of the paper on a CPU.

Each image shows one dominant shape (its class is the image label) and up to ``max_distractors``
smaller shapes, each filled with a colour blended with a crop of one of the real photographs that
scikit-image ships, over a textured, coloured background. Per image:

- ``label``: the dominant shape's class, in ``[0, num_classes)``;
- ``mask``: 0 for background, ``k + 1`` for a pixel of a shape of class ``k`` (distractors
  included), so ``num_seg_classes = num_classes + 1``; background is a real class because the
  shape-vs-background boundary is exactly what a dense head must find, and mIoU stays meaningful;
- ``depth`` (metres, all valid): the background is a ground plane (inverse depth linear in the row,
  3-5 m at the bottom, 8-15 m at the top, slightly tilted), shapes are tilted planes in front of it,
  the dominant one nearest (0.8-2 m, nearer when larger); the image is hazed with depth
  (atmospheric perspective), so colour as well as geometry carries a cue a linear head can use.

Deterministic by (seed, split, index): each item draws from ``np.random.default_rng((seed, split id,
index))``, so any worker can render any item and train/val are disjoint streams. Rendering is
vectorised numpy restricted to each shape's bounding box; textures are loaded once per process.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import skimage.data
from PIL import Image as PILImage

from model.data.base import Sample, Transform, VisionDataset, raw_sample

SHAPES: tuple[str, ...] = (
    "disc",
    "square",
    "triangle",
    "star",
    "ring",
    "cross",
    "ellipse",
    "semicircle",
    "crescent",
    "hexagon",
)
# Photographs and natural textures from skimage.data that load offline (no pooch download).
TEXTURE_NAMES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "camera",
    "moon",
    "coins",
    "cell",
)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def _polygon(r: np.ndarray, theta: np.ndarray, sides: int) -> np.ndarray:
    """Inside a regular polygon inscribed in the unit circle (polar form of its edge distance)."""
    sector = 2 * np.pi / sides
    return r * np.cos(np.mod(theta, sector) - sector / 2) <= np.cos(sector / 2)


def _shape_mask(cls: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of shape ``cls`` in local coordinates (unit radius, already rotated)."""
    r = np.hypot(u, v)
    name = SHAPES[cls]
    if name == "disc":
        return r <= 1
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if name == "triangle":
        return _polygon(r, np.arctan2(v, u), 3)
    if name == "star":
        tip = np.abs(np.mod(np.arctan2(v, u) * 5 / (2 * np.pi), 1.0) - 0.5) * 2  # 1 at the 5 tips
        return r <= 0.4 + 0.6 * tip
    if name == "ring":
        return (r <= 1) & (r >= 0.55)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 1)) | ((av <= 0.3) & (au <= 1))
    if name == "ellipse":
        return u**2 + (v / 0.45) ** 2 <= 1
    if name == "semicircle":
        return (r <= 1) & (v >= 0)
    if name == "crescent":
        return (r <= 1) & (np.hypot(u - 0.45, v) > 0.8)
    return _polygon(r, np.arctan2(v, u), 6)  # hexagon


@cache
def _photos() -> tuple[PILImage.Image, ...]:
    """The skimage photographs as RGB PIL images, read from the wheel once per process."""
    return tuple(PILImage.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in TEXTURE_NAMES)


@cache
def _textures(resolution: int) -> tuple[np.ndarray, ...]:
    """The photographs as float32 H×W×3 in [0, 1], shorter side scaled to 2×resolution (or left at
    full size when smaller), so that a crop at any position is a plain slice."""
    out = []
    for img in _photos():
        scale = min(1.0, 2 * resolution / min(img.size))
        size = (max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale)))
        out.append(np.asarray(img.resize(size, PILImage.Resampling.BILINEAR), dtype=np.float32) / 255)
    return tuple(out)


class ProceduralShapes(VisionDataset):
    """Textured shapes with label, segmentation mask and depth; see the module docstring.

    Config: ``size`` (items), ``num_classes`` (1..10 shape classes), ``resolution`` (pixels, square),
    ``seed``, ``max_distractors``, ``split`` (train / val / test: disjoint streams), ``texture``
    (weight of the photo texture in every fill, 1 by default; 0 gives flat-coloured shapes on a
    flat background: an easier variant whose only cue is the outline, for CPU runs of a minute or
    two that cannot learn shapes through texture. The random draws are the same for every value,
    so an item's layout, colours and label do not depend on it), ``contrast`` (False by default;
    True: light shapes (fills mapped to [0.6, 1]) on a dark background ([0, 0.4]) without haze, so
    a shape's outline is a sign-consistent edge even a linear patch embedding sees; the random
    draws are again unchanged, only the colours are remapped).
    """

    num_classes: int  # set by __init__ (the base allows None)

    name = "procedural"
    splits = ("train", "val", "test")
    has_depth = True
    needs_root = False

    def __init__(
        self,
        split: str = "train",
        size: int = 10_000,
        num_classes: int = 10,
        resolution: int = 32,
        seed: int = 0,
        max_distractors: int = 2,
        texture: float = 1.0,
        contrast: bool = False,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(split, transform)
        if not 1 <= num_classes <= len(SHAPES):
            raise ValueError(f"procedural: num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
        if resolution < 8 or size < 1 or max_distractors < 0 or not 0 <= texture <= 1:
            raise ValueError(
                "procedural: need resolution >= 8, size >= 1, max_distractors >= 0 and 0 <= texture <= 1"
            )
        self.size, self.resolution, self.seed = size, resolution, seed
        self.num_classes, self.num_seg_classes = num_classes, num_classes + 1
        self.max_distractors, self.texture, self.contrast = max_distractors, float(texture), bool(contrast)
        self._coords = np.arange(resolution, dtype=np.float32) + 0.5

    def __len__(self) -> int:
        return self.size

    def _texture_crop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        bank = _textures(self.resolution)
        tex = bank[rng.integers(len(bank))]
        y, x = rng.integers(tex.shape[0] - h + 1), rng.integers(tex.shape[1] - w + 1)
        return tex[y : y + h, x : x + w]

    def _fill(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        """A colour blended with a texture crop (weight ``(1 - alpha) * texture``): colour and texture
        are independent of the class."""
        weight = (1 - rng.uniform(0.35, 0.75)) * self.texture
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        crop = self._texture_crop(rng, h, w)  # drawn even when unused: same draws for every texture
        return np.float32(1 - weight) * colour + np.float32(weight) * crop

    def _draw(self, rng, image, mask, depth, cls: int, radius: float, centre, dist: float) -> None:
        """Paint one shape over the canvas (painter's order: callers draw far to near)."""
        res, c = self.resolution, self._coords
        reach = 1.15 * radius  # every shape lies within 1.15 radii of its centre
        y0, y1 = (int(np.clip(centre[0] + s * reach, 0, res)) for s in (-1, 1))
        x0, x1 = (int(np.clip(centre[1] + s * reach, 0, res)) for s in (-1, 1))
        if y1 <= y0 or x1 <= x0:
            return
        dy, dx = (c[y0:y1, None] - centre[0]) / radius, (c[None, x0:x1] - centre[1]) / radius
        angle = rng.uniform(0, 2 * np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = cos * dx + sin * dy, cos * dy - sin * dx
        inside = _shape_mask(cls, u, v)
        tilt = rng.uniform(-0.15, 0.15, 2)
        fill = self._fill(rng, y1 - y0, x1 - x0)
        if self.contrast:
            fill = np.float32(0.6) + np.float32(0.4) * fill
        image[y0:y1, x0:x1][inside] = fill[inside]
        mask[y0:y1, x0:x1][inside] = cls + 1
        depth[y0:y1, x0:x1][inside] = (dist * (1 + tilt[0] * u + tilt[1] * v))[inside]

    def load(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], index))
        res = self.resolution
        rows = self._coords[:, None] / res
        cols = self._coords[None, :] / res
        # Ground plane: inverse depth linear in the row, with a small sideways tilt.
        inv_bottom, inv_top = 1 / rng.uniform(3, 5), 1 / rng.uniform(8, 15)
        inv = inv_top + (inv_bottom - inv_top) * (rows + rng.uniform(-0.2, 0.2) * (cols - 0.5))
        depth = (1 / inv).astype(np.float32)
        image = self._fill(rng, res, res).copy()
        if self.contrast:
            image *= np.float32(0.4)
        mask = np.zeros((res, res), np.int64)

        label = int(rng.integers(self.num_classes))
        radius = rng.uniform(0.2, 0.35)
        near = 0.35 / radius * rng.uniform(0.8, 1.1)  # larger shapes are nearer: ~0.8-2 m
        for _ in range(rng.integers(self.max_distractors + 1)):
            self._draw(
                rng,
                image,
                mask,
                depth,
                int(rng.integers(self.num_classes)),
                rng.uniform(0.08, 0.16) * res,
                rng.uniform(0, res, 2),
                rng.uniform(near + 0.5, 3.0),
            )
        self._draw(rng, image, mask, depth, label, radius * res, rng.uniform(0.35, 0.65, 2) * res, near)

        haze = np.exp(-rng.uniform(0.03, 0.1) * depth)[..., None]
        air = rng.uniform(0.6, 0.9, 3).astype(np.float32)
        if not self.contrast:
            image = image * haze + air * (1 - haze)
        pixels = (image * 255 + 0.5).clip(0, 255).astype(np.uint8)
        return raw_sample(pixels, label=label, mask=mask, depth=depth)
