"""What every frozen-backbone evaluation shares: its typed config, its datasets, token extraction
at any input size, cached features and the small head-training loop.

Protocols follow DINOv2/DINOv3 (frozen backbone in eval mode, features under no_grad, heads trained
on top). On a CPU the backbone dominates, so by default features are extracted once and heads train
on the cached tensors; dense evaluations can stream with augmentation instead (``cache_features``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import torch
import torch.nn.functional as F
from timm.layers import Format
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from model.data import VisionDataset, build_dataset, dataset_class, dense_eval, eval_transform
from model.data.base import Transform

# Eval datasets default to CPU-sized splits where the dataset itself would be large.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {"procedural": {"size": 1024}, "scenes": {"size": 1024}}


class EvalError(ValueError):
    """An evaluation config a user can fix; the message names the key path (``eval.<name>.<key>``)."""


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass(frozen=True)
class EvalConfig:
    """Keys every evaluation accepts. Keys that are not protocol keys go to the dataset
    (``root``, ``size``, ``num_classes``...). When the eval dataset is the pretraining dataset,
    its pretraining keys (except ``size``) are inherited, so ``{dataset: procedural}`` evaluates on
    the classes and rendering seed the backbone was trained on (train split for heads, val for
    scores)."""

    name: ClassVar[str] = ""
    dataset: str = ""
    dataset_kwargs: Mapping[str, Any] = field(default_factory=dict)
    img_size: int | None = None  # None: the backbone's input size
    extract_batch_size: int = 128
    num_workers: int = 0
    train_split: str = "train"
    val_split: str = "val"
    seed: int = 0

    @classmethod
    def parse(cls, raw: Mapping[str, Any], pretrain_data: Mapping[str, Any] | None = None) -> Self:
        """Validate an ``eval.<name>`` mapping and fill in defaults; raises EvalError."""
        where = f"eval.{cls.name}"
        if not isinstance(raw, Mapping):
            raise EvalError(f"{where}: got {type(raw).__name__}; expected a mapping with 'dataset'")
        dataset = raw.get("dataset")
        if not isinstance(dataset, str):
            raise EvalError(f"{where}.dataset: missing; expected a dataset name")
        try:
            ds_cls = dataset_class(dataset)
        except ValueError as err:
            raise EvalError(f"{where}.dataset: {err}") from None
        accepted = set(inspect.signature(ds_cls.__init__).parameters) - {"self", "split", "transform"}
        hints = typing.get_type_hints(cls)
        protocol = {f.name for f in dataclasses.fields(cls)} - {"dataset", "dataset_kwargs"}
        kwargs = dict(DATASET_DEFAULTS.get(dataset, {}))
        if pretrain_data and pretrain_data.get("name") == dataset:
            kwargs.update({k: v for k, v in pretrain_data.items() if k in accepted and k != "size"})
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "dataset":
                continue
            if key in protocol:
                if not _type_ok(value, hints[key]):
                    raise EvalError(f"{where}.{key}: got {value!r}; expected {hints[key]}")
                values[key] = value
            elif key in accepted:
                kwargs[key] = value
            else:
                close = difflib.get_close_matches(key, [*protocol, *accepted], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise EvalError(
                    f"{where}.{key}: unknown key{hint} (protocol keys: "
                    f"{', '.join(sorted(protocol))}; {dataset} keys: "
                    f"{', '.join(sorted(accepted))})"
                )
        config = cls(dataset=dataset, dataset_kwargs=dict(sorted(kwargs.items())), **values)
        config.validate()
        return config

    def validate(self) -> None:
        """Range checks beyond types; subclasses extend it."""
        for key in ("extract_batch_size", "img_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise EvalError(f"eval.{self.name}.{key}: must be >= 1, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (defaults filled in): what an eval key hashes and a result records."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "dataset_kwargs"}
        return {**out, "dataset_kwargs": dict(self.dataset_kwargs)}

    def build(self, split: str, transform: Transform | None) -> VisionDataset:
        return build_dataset(self.dataset, split, transform, **self.dataset_kwargs)

    def size(self, model: VisionTransformer) -> int:
        return self.img_size or model.patch_embed.img_size[0]

    def loader(
        self,
        dataset: Dataset,
        batch_size: int | None = None,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.extract_batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            generator=generator,
            drop_last=shuffle,
        )


@contextmanager
def any_size(model: VisionTransformer) -> Iterator[None]:
    """Let a timm ViT take inputs of any size (position embeddings resampled, as DINOv2 evaluates
    at 512 px a backbone pretrained at 224). Restores the model's settings afterwards."""
    pe = model.patch_embed
    saved = (model.dynamic_img_size, pe.flatten, pe.output_fmt, pe.strict_img_size)
    # timm marks dynamic_img_size Final (for TorchScript); an eager model reads it on every forward
    model.dynamic_img_size = True  # type: ignore[misc]
    pe.flatten, pe.output_fmt, pe.strict_img_size = False, Format.NHWC, False
    try:
        yield
    finally:
        model.dynamic_img_size, pe.flatten, pe.output_fmt, pe.strict_img_size = saved  # type: ignore[misc]


def grid(model: VisionTransformer, height: int, width: int) -> tuple[int, int]:
    ph, pw = model.patch_embed.patch_size
    return height // ph, width // pw


@torch.no_grad()
def tokens(model: VisionTransformer, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLS [B, D], patch tokens [B, D, h, w]) of the last layer after the final norm, on the CPU
    whatever the backbone's device (heads are small; features of a split may not fit a GPU)."""
    with any_size(model):
        out = model.forward_features(images.to(next(model.parameters()).device)).float().cpu()
    h, w = grid(model, *images.shape[-2:])
    patches = out[:, model.num_prefix_tokens :]
    return out[:, 0], patches.transpose(1, 2).reshape(out.shape[0], -1, h, w)


def progress_iter(
    items: Iterable[Any], description: str, show: bool, total: int | None = None
) -> Iterable[Any]:
    """A rich bar in a terminal; elsewhere (a cell's log) a line when the work starts and ends."""
    if not show:
        return items
    if sys.stderr.isatty():
        from rich.progress import track

        return track(items, description=description, total=total, transient=True)
    return _lines(items, description)


def _lines(items: Iterable[Any], description: str) -> Iterator[Any]:
    started = time.perf_counter()
    print(f"{description}: started", file=sys.stderr, flush=True)
    count = 0
    for item in items:
        count += 1
        yield item
    print(
        f"{description}: {count} batches in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True
    )


@dataclass
class Features:
    """Backbone outputs of one split with the targets the dataset provides."""

    cls: torch.Tensor  # [N, D]
    avgpool: torch.Tensor | None = None  # [N, D] mean of the patch tokens
    patch: torch.Tensor | None = None  # [N, D, h, w]
    label: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    depth: torch.Tensor | None = None


FeatureCache = dict[tuple[Any, ...], Features]


def extract(
    model: VisionTransformer,
    config: EvalConfig,
    split: str,
    *,
    dense: bool,
    cache: FeatureCache | None,
    progress: bool,
) -> Features:
    """Features of a whole split, computed once per (dataset, split, size, kind) and run: k-NN and
    the linear probe share the global features, segmentation and depth the dense ones."""
    size = config.size(model)
    # repr: dataset keys may hold lists (a YAML pair such as scenes' ``objects: [1, 3]``)
    key = (id(model), config.dataset, repr(sorted(config.dataset_kwargs.items())), split, size, dense)
    if cache is not None and key in cache:
        return cache[key]
    transform = dense_eval(size) if dense else eval_transform(size)
    dataset = config.build(split, transform)
    parts: dict[str, list[torch.Tensor]] = {}
    model.eval()
    for batch in progress_iter(config.loader(dataset), f"features {config.dataset}/{split}", progress):
        cls, patch = tokens(model, batch["image"])
        parts.setdefault("cls", []).append(cls)
        parts.setdefault("avgpool", []).append(patch.mean((2, 3)))
        if dense:
            parts.setdefault("patch", []).append(patch)
        for target in ("label", "mask", "depth"):
            if target in batch and (dense or target == "label"):
                parts.setdefault(target, []).append(torch.as_tensor(batch[target]))
    features = Features(**{k: torch.cat(v) for k, v in parts.items()})
    if cache is not None:
        cache[key] = features
    return features


def minibatches(
    tensors: Sequence[torch.Tensor], batch_size: int, generator: torch.Generator
) -> Callable[[], Iterator[tuple[torch.Tensor, ...]]]:
    """One shuffled epoch over cached tensors per call; the last partial batch is dropped when
    there is more than one batch (BatchNorm heads need > 1 sample)."""
    n = len(tensors[0])

    def epoch() -> Iterator[tuple[torch.Tensor, ...]]:
        order = torch.randperm(n, generator=generator)
        stop = n - n % batch_size if n > batch_size else n
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            yield tuple(t[idx] for t in tensors)

    return epoch


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size) if n > batch_size else 1


def fit(
    head: nn.Module,
    epoch: Callable[[], Iterable[tuple[torch.Tensor, ...]]],
    steps: int,
    lr: float,
    weight_decay: float,
    loss_fn: Callable[..., torch.Tensor],
) -> float:
    """Train ``head`` for ``steps`` AdamW steps with a cosine schedule; returns the last loss.
    ``loss_fn(head, *batch)`` gives the loss of a batch from ``epoch()``."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    head.train()
    step, loss = 0, torch.tensor(float("nan"))
    while step < steps:
        for batch in epoch():
            loss = loss_fn(head, *batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= steps:
                break
    head.eval()
    return float(loss.detach())


class LinearDenseHead(nn.Module):
    """DINOv2's linear dense head: BatchNorm + 1×1 conv on the patch-token grid."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_dim)
        self.conv = nn.Conv2d(in_dim, out_dim, 1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.conv(self.bn(features))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)
