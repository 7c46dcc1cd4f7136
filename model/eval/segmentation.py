"""Linear semantic segmentation on a frozen backbone (DINOv2/DINOv3 "linear" protocol).

A BatchNorm + 1×1 conv head reads the last layer's patch tokens on their grid; logits are
upsampled bilinearly to the mask and trained with cross-entropy that skips IGNORE_INDEX. Scores
are mIoU (mean over classes present in the ground truth or the prediction) and pixel accuracy.
Validation images larger than the training crop (``val_size`` > ``img_size``) are predicted with a
sliding window of the crop size, overlapping windows averaged, as in DINOv2's ADE20K evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torchvision.transforms import v2

from model.data import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, dense_train
from model.eval.base import (
    EvalConfig,
    EvalError,
    FeatureCache,
    LinearDenseHead,
    extract,
    fit,
    minibatches,
    progress_iter,
    steps_per_epoch,
    tokens,
)


@dataclass(frozen=True)
class LinearSegConfig(EvalConfig):
    name = "linear_seg"
    epochs: int = 20
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    batch_size: int = 64
    cache_features: bool = True  # False: stream with dense_train augmentation (the GPU protocol)
    val_size: int | None = None  # shorter side of validation images; None: img_size (centre crop)
    stride: int | None = None  # sliding-window stride; None: 2/3 of the crop

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise EvalError(f"eval.{self.name}: need epochs >= 1, batch_size >= 2 and lr > 0")
        if self.val_size is not None and self.img_size is not None and self.val_size < self.img_size:
            raise EvalError(f"eval.{self.name}.val_size: {self.val_size} is below img_size {self.img_size}")


def streamed(
    model: VisionTransformer, config: EvalConfig, batch_size: int, target: str
) -> tuple[int, Callable[[], Iterator[tuple[torch.Tensor, ...]]]]:
    """(batches per epoch, epoch function yielding (CLS, patch tokens, target)) computing the
    features on the fly from dense_train-augmented crops."""
    dataset = config.build(config.train_split, dense_train(config.size(model)))
    generator = torch.Generator().manual_seed(config.seed)
    loader = config.loader(dataset, batch_size=batch_size, shuffle=True, generator=generator)

    def epoch() -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in loader:
            yield (*tokens(model, batch["image"]), batch[target])

    return len(loader), epoch


def confusion(pred: torch.Tensor, mask: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = mask != IGNORE_INDEX
    index = mask[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(conf: torch.Tensor) -> dict[str, float]:
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return {"miou": float(iou.mean() * 100), "pixel_acc": float(tp.sum() / conf.sum().clamp(min=1) * 100)}


@torch.no_grad()
def slide(
    model: VisionTransformer,
    head: LinearDenseHead,
    image: torch.Tensor,
    crop: int,
    stride: int,
    num_classes: int,
) -> torch.Tensor:
    """Logits [C, H, W] of one image from overlapping crop×crop windows (averaged where they overlap)."""
    _, height, width = image.shape
    logits = torch.zeros(num_classes, height, width)
    count = torch.zeros(1, height, width)
    ys = sorted({*range(0, max(height - crop, 0) + 1, stride), max(height - crop, 0)})
    xs = sorted({*range(0, max(width - crop, 0) + 1, stride), max(width - crop, 0)})
    for y in ys:
        for x in xs:
            window = image[:, y : y + crop, x : x + crop]
            out = head(tokens(model, window[None])[1], window.shape[-2:])[0]
            logits[:, y : y + crop, x : x + crop] += out
            count[:, y : y + crop, x : x + crop] += 1
    return logits / count


def linear_seg(
    model: VisionTransformer,
    config: LinearSegConfig,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """``miou`` and ``pixel_acc`` (%) of a linear head on last-layer patch tokens."""
    probe = config.build(config.val_split, None)
    if probe.num_seg_classes is None:
        raise EvalError(f"eval.{config.name}.dataset: {config.dataset} has no segmentation masks")
    num_classes = probe.num_seg_classes
    torch.manual_seed(config.seed)
    head = LinearDenseHead(model.embed_dim, num_classes)

    def loss(h: LinearDenseHead, cls: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(h(feats, mask.shape[-2:]), mask, ignore_index=IGNORE_INDEX)

    if config.cache_features:
        train = extract(model, config, config.train_split, dense=True, cache=cache, progress=progress)
        assert train.patch is not None and train.mask is not None  # dense, of a dataset with masks
        epoch = minibatches(
            (train.cls, train.patch, train.mask),
            config.batch_size,
            torch.Generator().manual_seed(config.seed),
        )
        per_epoch = steps_per_epoch(len(train.patch), config.batch_size)
    else:
        per_epoch, epoch = streamed(model, config, config.batch_size, "mask")
    fit(head, epoch, config.epochs * per_epoch, config.lr, config.weight_decay, loss)

    crop = config.size(model)
    val_size = config.val_size or crop
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long)
    if val_size == crop:
        val = extract(model, config, config.val_split, dense=True, cache=cache, progress=progress)
        assert val.patch is not None and val.mask is not None
        with torch.no_grad():
            for feats, mask in zip(
                val.patch.split(config.batch_size), val.mask.split(config.batch_size), strict=True
            ):
                conf += confusion(head(feats, mask.shape[-2:]).argmax(1), mask, num_classes)
    else:
        transform = v2.Compose(
            [
                v2.Resize(val_size, antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        dataset = config.build(config.val_split, transform)
        stride = config.stride or max(1, crop * 2 // 3)
        for i in progress_iter(range(len(dataset)), f"sliding {config.dataset}", progress):
            sample = dataset[i]
            pred = slide(model, head, sample["image"], crop, stride, num_classes).argmax(0)
            conf += confusion(pred, sample["mask"], num_classes)
    return scores(conf)
