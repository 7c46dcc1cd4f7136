"""Augmentation pipelines per framework, on torchvision.transforms.v2.

Every pipeline takes a sample dict as the datasets build it (uint8 ``tv_tensors.Image``, mask and
depth as ``tv_tensors.Mask``) and returns one, so a geometric transform moves image, mask and depth
together; masks and depth are resampled with nearest and skipped by photometric transforms (see
model.data.base). Images leave as float32, normalised.

Defaults are the published ones at 224 px; for the small images of CPU studies pass smaller sizes
(the blur kernel scales with the crop size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from model.data.base import Sample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Range = tuple[float, float]
INTERPOLATION = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    # ToDtype with a plain dtype converts images only: masks keep int64, depth keeps float32 metres.
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def _blur(size: int) -> v2.GaussianBlur:
    """DINO's blur (kernel 9, sigma 0.1-2 at 224 px) scaled to the crop size."""
    kernel = max(3, int(size * 0.04) // 2 * 2 + 1)
    return v2.GaussianBlur(kernel, sigma=(0.1, max(0.2, 2.0 * size / 224)))


def supervised_train(
    size: int,
    scale: Range = (0.35, 1.0),
    jitter: float = 0.3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """DeiT-III's "3-Augment": random resized crop, flip, one of grayscale / solarize / blur, colour
    jitter. The crop scale floor defaults to 0.35 rather than 0.08 so that small images keep their
    object; pass (0.08, 1.0) and ``interpolation="bicubic"`` for DeiT-III's ImageNet crop."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                size, scale=scale, interpolation=INTERPOLATION[interpolation], antialias=True
            ),
            v2.RandomHorizontalFlip(),
            v2.RandomChoice(
                [v2.Grayscale(num_output_channels=3), v2.RandomSolarize(128, p=1.0), _blur(size)]
            ),
            v2.ColorJitter(jitter, jitter, jitter),
            *_normalize(mean, std),
        ]
    )


def eval_transform(
    size: int,
    crop_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize the shorter side to size / crop_ratio, centre-crop ``size``, normalise (the usual eval)."""
    return v2.Compose(
        [
            v2.Resize(round(size / crop_ratio), antialias=True),
            v2.CenterCrop(size),
            *_normalize(mean, std),
        ]
    )


def dense_train(
    size: int,
    scale: Range = (0.5, 1.0),
    jitter: float = 0.2,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Segmentation / depth training: one random resized crop and flip for image, mask and depth,
    colour jitter on the image only. No padding, so no fill value can leak into mask or depth."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(jitter, jitter, jitter),
            *_normalize(mean, std),
        ]
    )


def dense_eval(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Segmentation / depth evaluation: shorter side to ``size``, centre crop (fixed shapes batch)."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), *_normalize(mean, std)])


class MultiCrop:
    """DINO / DINOv2 multi-crop: two global crops and ``n_local`` local crops of the image.

    Follows DINO's recipe: flip, colour jitter (p ``jitter_p`` 0.8, strengths ``jitter`` = brightness,
    contrast, saturation, hue 0.4 / 0.4 / 0.2 / 0.1), grayscale (p ``grayscale_p`` 0.2) on every
    crop; blur with probabilities ``blur`` (first global, second global, locals; DINO's 1.0 / 0.1 /
    0.5 by default, DINOv2's code runs 0.0 / 0.9 / 0.5), solarize p ``solarize_p`` 0.2 on the second
    global crop; DINO and DINOv2 crop with bicubic interpolation (``interpolation``; the cpu
    recipes keep bilinear). Where colour is a shortcut to the pretext task (small synthetic data),
    ``grayscale_p`` 1 and no saturation / hue jitter remove it. Returns the
    sample with ``image`` replaced by the list of crops (globals first); mask and depth are dropped,
    since no single geometry matches the crops. Collated, the list becomes a list of batches.
    """

    def __init__(
        self,
        global_size: int = 224,
        local_size: int = 96,
        n_local: int = 8,
        global_scale: Range = (0.32, 1.0),
        local_scale: Range = (0.05, 0.32),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        blur: tuple[float, float, float] = (1.0, 0.1, 0.5),
        interpolation: str = "bilinear",
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        solarize_p: float = 0.2,
    ) -> None:
        def crop(size: int, scale: Range, blur_p: float, solarize: float = 0.0) -> v2.Compose:
            return v2.Compose(
                [
                    v2.RandomResizedCrop(
                        size, scale=scale, interpolation=INTERPOLATION[interpolation], antialias=True
                    ),
                    v2.RandomHorizontalFlip(),
                    v2.RandomApply([v2.ColorJitter(*jitter)], p=jitter_p),
                    v2.RandomGrayscale(p=grayscale_p),
                    v2.RandomApply([_blur(size)], p=blur_p),
                    v2.RandomSolarize(128, p=solarize),
                    *_normalize(mean, std),
                ]
            )

        self.n_local = n_local
        self.global1 = crop(global_size, global_scale, blur_p=blur[0])
        self.global2 = crop(global_size, global_scale, blur_p=blur[1], solarize=solarize_p)
        self.local = crop(local_size, local_scale, blur_p=blur[2])

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        crops = [self.global1(image), self.global2(image), *(self.local(image) for _ in range(self.n_local))]
        return {**{k: v for k, v in sample.items() if k not in ("mask", "depth")}, "image": crops}
