"""Procedural scenes: several textured objects per image, where a pixel's class is its texture.

The easy ``procedural`` variant (one flat shape on a flat background) leaves a patch-level
objective little to learn: a random-init ViT's patch tokens already carry intensity, which is all
its masks need. Here each object is a random shape (model.data.procedural.SHAPES, unrelated to the
class) filled with the periodic pattern of its class (stripes at four orientations, two
checkerboards, dots, a grid, zigzags, speckle) in two random colours of random lightness, over a
photograph-textured background (class 0). Colour, lightness, shape, size and phase carry nothing
of the class; recognising a pattern needs features that are invariant to its phase and colours,
which a random projection of a patch is not, so a linear head on random-init patch tokens scores
low and one on learned local features scores high.

Per image: ``label``, the class (in ``[0, num_classes)``) that covers the most visible pixels
(ties: the lower class); ``mask``, 0 for background and ``k + 1`` for class ``k``, exact by
construction (objects are painted far to near, the mask with them). Deterministic by (seed,
split, index) like ``procedural``.

Measured (docs/ssl-cpu-log.md): a random-init micro ViT scores at chance here (k-NN 27 % over 4
texture classes, mIoU 15), as intended; but within a CPU budget (32 px, patch 8, 800 steps)
neither supervised nor DINOv2 pretraining lifted linear segmentation above it, so the data awaits
a larger budget (more tokens, more steps) before it can carry the dense-feature question.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from model.data.base import Sample, Transform, VisionDataset, raw_sample
from model.data.procedural import _SPLIT_IDS, SHAPES, _shape_mask, _textures

# Most distinct first, so that a small num_classes keeps the easiest patterns apart.
PATTERNS: tuple[str, ...] = (
    "stripes_0",
    "checker",
    "speckle",
    "stripes_90",
    "dots",
    "stripes_45",
    "grid",
    "stripes_135",
    "checker_45",
    "zigzag",
)


def _pattern(cls: int, y: np.ndarray, x: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Pattern ``cls`` as a boolean array over pixel coordinates (y, x), random phase and a small
    random tilt (so that no two objects of a class are pixel-identical)."""
    name = PATTERNS[cls]
    if name == "speckle":  # i.i.d. on/off cells of ~period/3 pixels: no orientation, no period
        cell = max(1.0, period / 3)
        cy, cx = np.floor(y / cell).astype(np.int64), np.floor(x / cell).astype(np.int64)
        cy, cx = cy - cy.min(), cx - cx.min()
        return rng.random((cy.max() + 1, cx.max() + 1))[cy, cx] < 0.5
    base = {"stripes_45": 45, "stripes_90": 90, "stripes_135": 135, "checker_45": 45}.get(name, 0)
    angle = np.deg2rad(base + rng.uniform(-8, 8))
    u = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform(0, 1)
    v = (y * np.cos(angle) - x * np.sin(angle)) / period + rng.uniform(0, 1)
    fu, fv = np.mod(u, 1.0), np.mod(v, 1.0)
    if name.startswith("stripes"):
        return np.broadcast_to(fu < 0.5, np.broadcast_shapes(u.shape, v.shape))
    if name.startswith("checker"):
        return (fu < 0.5) ^ (fv < 0.5)
    if name == "dots":
        return np.hypot(fu - 0.5, fv - 0.5) < 0.3
    if name == "grid":
        return (fu < 0.25) | (fv < 0.25)
    # zigzag: stripes whose offset is a triangle wave along them
    return np.mod(u + 0.5 * np.abs(np.mod(v, 1.0) - 0.5) * 2, 1.0) < 0.5


class ProceduralScenes(VisionDataset):
    """Several objects whose class is their texture; see the module docstring.

    Config: ``size`` (items), ``num_classes`` (1..10 texture classes), ``resolution`` (pixels,
    square), ``seed``, ``objects`` (min, max objects per image), ``radius`` (min, max object radius
    as a fraction of the resolution), ``period`` (pattern period in pixels; each object scales it by
    0.8-1.25), ``noise`` (std of the per-pixel Gaussian noise, in [0, 1] units), ``cue``
    (``texture``: the class is the pattern, the shape is random; ``shape``: the class is the shape,
    the pattern is random), ``contrast`` (light objects on a dark background, as ``procedural``'s).
    """

    num_classes: int  # set by __init__ (the base allows None)

    name = "scenes"
    splits = ("train", "val", "test")
    needs_root = False

    def __init__(
        self,
        split: str = "train",
        size: int = 10_000,
        num_classes: int = 10,
        resolution: int = 32,
        seed: int = 0,
        objects: tuple[int, int] = (2, 4),
        radius: tuple[float, float] = (0.15, 0.4),
        period: float = 4.0,
        noise: float = 0.03,
        cue: Literal["texture", "shape"] = "texture",
        contrast: bool = False,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(split, transform)
        if not 1 <= num_classes <= len(PATTERNS):
            raise ValueError(f"scenes: num_classes must be in 1..{len(PATTERNS)}, got {num_classes}")
        lo, hi = objects
        if resolution < 8 or size < 1 or not 1 <= lo <= hi:
            raise ValueError(
                f"scenes: need resolution >= 8, size >= 1 and 1 <= objects[0] <= objects[1], "
                f"got resolution={resolution}, size={size}, objects={objects}"
            )
        if not 0 < radius[0] <= radius[1] or period < 2 or noise < 0:
            raise ValueError(
                f"scenes: need 0 < radius[0] <= radius[1], period >= 2 and noise >= 0, "
                f"got radius={radius}, period={period}, noise={noise}"
            )
        self.size, self.resolution, self.seed = size, resolution, seed
        self.num_classes, self.num_seg_classes = num_classes, num_classes + 1
        self.objects, self.radius = (int(lo), int(hi)), (float(radius[0]), float(radius[1]))
        if cue not in ("texture", "shape"):
            raise ValueError(f"scenes: cue must be 'texture' or 'shape', got {cue!r}")
        self.period, self.noise, self.cue, self.contrast = float(period), float(noise), cue, bool(contrast)
        self._coords = np.arange(resolution, dtype=np.float32) + 0.5

    def __len__(self) -> int:
        return self.size

    @staticmethod
    def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two random colours whose lightness differs by 0.3-0.6, so every pattern is visible."""
        a = rng.uniform(0, 1, 3).astype(np.float32)
        step = np.float32(rng.uniform(0.3, 0.6) * (1 if a.mean() < 0.5 else -1))
        b = np.clip(a + step + rng.uniform(-0.15, 0.15, 3).astype(np.float32), 0, 1)
        return a, b

    def _object(self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, radius: float) -> None:
        res, c = self.resolution, self._coords
        cls, other = int(rng.integers(self.num_classes)), int(rng.integers(len(SHAPES)))
        shape, pattern_id = (other, cls) if self.cue == "texture" else (cls, other)
        centre = rng.uniform(0, res, 2)
        reach = 1.15 * radius  # every shape lies within 1.15 radii of its centre
        y0, y1 = (int(np.clip(centre[0] + s * reach, 0, res)) for s in (-1, 1))
        x0, x1 = (int(np.clip(centre[1] + s * reach, 0, res)) for s in (-1, 1))
        angle = rng.uniform(0, 2 * np.pi)
        period = self.period * rng.uniform(0.8, 1.25)
        on, off = self._colours(rng)
        if y1 <= y0 or x1 <= x0:
            return
        y, x = c[y0:y1, None], c[None, x0:x1]
        dy, dx = (y - centre[0]) / radius, (x - centre[1]) / radius
        cos, sin = np.cos(angle), np.sin(angle)
        inside = _shape_mask(shape, cos * dx + sin * dy, cos * dy - sin * dx)
        pattern = _pattern(pattern_id, y, x, period, rng)
        fill = np.where(pattern[..., None], on, off)
        if self.contrast:
            fill = np.float32(0.6) + np.float32(0.4) * fill
        image[y0:y1, x0:x1][inside] = fill[inside]
        mask[y0:y1, x0:x1][inside] = cls + 1

    def load(self, index: int) -> Sample:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], index))
        res = self.resolution
        bank = _textures(res)
        tex = bank[rng.integers(len(bank))]
        y, x = rng.integers(tex.shape[0] - res + 1), rng.integers(tex.shape[1] - res + 1)
        tint = rng.uniform(0, 1, 3).astype(np.float32)
        image: np.ndarray = np.float32(0.5) * tex[y : y + res, x : x + res] + np.float32(0.5) * tint
        if self.contrast:
            image *= np.float32(0.4)
        mask = np.zeros((res, res), np.int64)
        radii = np.sort(rng.uniform(*self.radius, rng.integers(self.objects[0], self.objects[1] + 1)))[::-1]
        for radius in radii:  # larger objects behind smaller ones: the largest is rarely hidden
            self._object(rng, image, mask, radius * res)
        if self.noise:
            image = image + rng.normal(0, self.noise, image.shape).astype(np.float32)
        counts = np.bincount(mask.ravel(), minlength=self.num_classes + 1)[1:]
        pixels = (image * 255 + 0.5).clip(0, 255).astype(np.uint8)
        return raw_sample(pixels, label=int(counts.argmax()), mask=mask)
