"""Image classification on a frozen backbone: k-NN on the CLS token and linear probes.

k-NN follows DINO/DINOv2: L2-normalised features, cosine similarity, the k nearest training
samples vote with weight exp(sim / T). The linear probe follows DINOv2's two feature choices
(CLS, and CLS concatenated with the average of the patch tokens) and reports the better one as
``top1`` as DINOv2 picks its best probe; heads train on cached features without augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from model.eval.base import (
    EvalConfig,
    EvalError,
    FeatureCache,
    Features,
    extract,
    fit,
    minibatches,
    steps_per_epoch,
)

TOP5_MIN_CLASSES = 10  # k-NN reports top-5 only over more classes than this


def _labels(config: EvalConfig, features: Features) -> torch.Tensor:
    if features.label is None:
        raise EvalError(f"eval.{config.name}.dataset: {config.dataset} has no image labels")
    return features.label.long()


def _topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return float((top == labels[:, None]).any(1).float().mean() * 100)


@dataclass(frozen=True)
class KNNConfig(EvalConfig):
    name = "knn"
    k: int = 20
    temperature: float = 0.07

    def validate(self) -> None:
        super().validate()
        if self.k < 1 or self.temperature <= 0:
            raise EvalError(
                f"eval.knn: need k >= 1 and temperature > 0, got k={self.k}, temperature={self.temperature}"
            )


def knn_scores(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    query: torch.Tensor,
    k: int,
    temperature: float,
    num_classes: int,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class votes [Q, C] of each query from its k most cosine-similar training features."""
    train = F.normalize(train, dim=1)
    out = []
    for q in F.normalize(query, dim=1).split(chunk):
        sims, idx = (q @ train.T).topk(min(k, len(train)), dim=1)
        votes = torch.zeros(len(q), num_classes).scatter_add_(
            1, train_labels[idx], (sims / temperature).exp()
        )
        out.append(votes)
    return torch.cat(out)


def knn(
    model: VisionTransformer, config: KNNConfig, cache: FeatureCache | None = None, progress: bool = False
) -> dict[str, float]:
    """``top1`` (%) of the k-NN classifier on CLS features, and ``top5`` where the data has more than
    ``TOP5_MIN_CLASSES`` classes (over fewer, top-5 is near 100 % for any features and says nothing)."""
    train = extract(model, config, config.train_split, dense=False, cache=cache, progress=progress)
    val = extract(model, config, config.val_split, dense=False, cache=cache, progress=progress)
    train_labels, val_labels = _labels(config, train), _labels(config, val)
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    scores = knn_scores(train.cls, train_labels, val.cls, config.k, config.temperature, num_classes)
    out = {"top1": _topk_accuracy(scores, val_labels, 1)}
    if num_classes > TOP5_MIN_CLASSES:
        out["top5"] = _topk_accuracy(scores, val_labels, 5)
    return out


@dataclass(frozen=True)
class LinearClsConfig(EvalConfig):
    name = "linear_cls"
    epochs: int = 30
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    batch_size: int = 256

    def validate(self) -> None:
        super().validate()
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise EvalError("eval.linear_cls: need epochs >= 1, batch_size >= 1 and lr > 0")


def _probe(
    config: LinearClsConfig, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Train a linear layer on (x, y); its scores on x_val."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    head = nn.Linear(x.shape[1], num_classes)
    steps = config.epochs * steps_per_epoch(len(x), config.batch_size)
    fit(
        head,
        minibatches((x, y), config.batch_size, generator),
        steps,
        config.lr,
        config.weight_decay,
        lambda h, xb, yb: F.cross_entropy(h(xb), yb),
    )
    with torch.no_grad():
        return head(x_val)


def linear_cls(
    model: VisionTransformer,
    config: LinearClsConfig,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Linear probes on CLS (``top1_cls``) and CLS + avgpool (``top1_cls_avgpool``); ``top1`` is
    the better of the two."""
    train = extract(model, config, config.train_split, dense=False, cache=cache, progress=progress)
    val = extract(model, config, config.val_split, dense=False, cache=cache, progress=progress)
    train_labels, val_labels = _labels(config, train), _labels(config, val)
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    assert train.avgpool is not None and val.avgpool is not None  # extract always pools
    out = {}
    for name, x, x_val in (
        ("cls", train.cls, val.cls),
        ("cls_avgpool", torch.cat((train.cls, train.avgpool), 1), torch.cat((val.cls, val.avgpool), 1)),
    ):
        out[f"top1_{name}"] = _topk_accuracy(
            _probe(config, x, train_labels, x_val, num_classes), val_labels, 1
        )
    out["top1"] = max(out.values())
    return out
