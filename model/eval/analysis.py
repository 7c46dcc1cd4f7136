"""The paper's token-interaction analysis: how each block treats the CLS token vs the patch tokens.

Per block ``i`` (metric ``block<i>.<name>``, i from 0, so a report can plot name vs depth):

- ``cos_cls_patch_{pre,post}_norm1``: mean cosine similarity between CLS and each patch token, at
  the input of norm1 and at its output (the paper: it falls to about zero after norm1);
- ``cos_patch_patch_{pre,post}_norm1``: mean cosine similarity over pairs of distinct patch tokens;
- ``ln_inv_std_cls`` / ``ln_inv_std_patch``: the per-token scale norm1 applies (1/σ over the
  dimensions), mean over CLS / patch tokens; ``ln_gamma_abs_cls`` / ``ln_gamma_abs_patch``: mean
  |γ| of the norm1 weight that CLS / patches see, ``ln_gamma_cos`` the cosine between the two γ
  vectors (1 unless norm1 is specialized);
- ``attn_cls_entropy``: entropy (nats) of the CLS query's attention over all keys, mean over heads
  and images, recomputed from q·k since the fused kernel never materialises it;
  ``attn_cls_patch_mass``: the share of that attention that lands on patch tokens;
- ``norm_cls`` / ``norm_patch``: L2 norms of the block's output tokens (mean); ``outliers``: patch
  tokens per image whose norm exceeds ``outlier_factor`` × that image's median patch norm (the
  high-norm artefacts of Darcet et al., 2024), ``outlier_frac`` the same as a share of patches.

Hooks sit on ``blocks[i].norm1`` (a TokenSplit wrapper when specialized: hooking the wrapper sees
the whole sequence), ``blocks[i].attn.qkv`` and ``blocks[i]``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from model.data import dense_eval
from model.eval.base import EvalConfig, EvalError, FeatureCache, any_size, progress_iter
from model.vit import TokenSplit

METRICS: tuple[str, ...] = (
    "cos_cls_patch_pre_norm1",
    "cos_cls_patch_post_norm1",
    "cos_patch_patch_pre_norm1",
    "cos_patch_patch_post_norm1",
    "ln_inv_std_cls",
    "ln_inv_std_patch",
    "ln_gamma_abs_cls",
    "ln_gamma_abs_patch",
    "ln_gamma_cos",
    "attn_cls_entropy",
    "attn_cls_patch_mass",
    "norm_cls",
    "norm_patch",
    "outliers",
    "outlier_frac",
)


@dataclass(frozen=True)
class AnalysisConfig(EvalConfig):
    name = "analysis"
    max_images: int = 256
    outlier_factor: float = 3.0

    def validate(self) -> None:
        super().validate()
        if self.max_images < 1 or self.outlier_factor <= 1:
            raise EvalError("eval.analysis: need max_images >= 1 and outlier_factor > 1")


def _cosines(x: torch.Tensor, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: mean cos(CLS, patch) and mean cos(patch_i, patch_j) over i != j."""
    x = F.normalize(x.float(), dim=-1)
    cls, patches = x[:, 0], x[:, prefix:]
    m = patches.shape[1]
    cls_patch = (patches @ cls[:, :, None]).squeeze(-1).mean(1)
    total = patches.sum(1)
    patch_patch = ((total * total).sum(-1) - m) / max(m * (m - 1), 1)
    return cls_patch, patch_patch


def _gammas(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The norm1 weight the CLS token and the patch tokens see (ones for a norm without weight)."""
    if isinstance(norm, TokenSplit):
        return _gammas(norm.cls)[0], _gammas(norm.patch)[0]
    weight = getattr(norm, "weight", None)
    weight = torch.ones(1) if weight is None else weight.detach().float()
    return weight, weight


class _Recorder:
    """Forward hooks that add per-image statistics of every block into running sums."""

    def __init__(self, model: VisionTransformer, outlier_factor: float) -> None:
        self.prefix = model.num_prefix_tokens
        self.factor = outlier_factor
        self.sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.handles = []
        for i, block in enumerate(cast(Sequence[Block], model.blocks)):
            attn = cast(Attention, block.attn)
            self.handles += [
                block.norm1.register_forward_hook(self._norm1(i)),
                attn.qkv.register_forward_hook(self._qkv(i, attn)),
                block.register_forward_hook(self._output(i)),
            ]

    def _add(self, block: int, name: str, per_image: torch.Tensor) -> None:
        self.sums[block][name] += float(per_image.sum())

    def _norm1(self, i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0]
            for stage, t in (("pre", x), ("post", output)):
                cls_patch, patch_patch = _cosines(t, self.prefix)
                self._add(i, f"cos_cls_patch_{stage}_norm1", cls_patch)
                self._add(i, f"cos_patch_patch_{stage}_norm1", patch_patch)
            inv_std = x.float().var(-1, unbiased=False).add(1e-6).rsqrt()
            self._add(i, "ln_inv_std_cls", inv_std[:, 0])
            self._add(i, "ln_inv_std_patch", inv_std[:, self.prefix :].mean(1))

        return hook

    def _qkv(self, i: int, attn: Attention):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], qkv: torch.Tensor) -> None:
            b, n, _ = qkv.shape
            q, k, _v = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
            probs = (
                ((q[:, :, :1] * attn.scale) @ k.transpose(-2, -1)).float().softmax(-1)[:, :, 0]
            )  # [B, H, N]
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1)
            self._add(i, "attn_cls_entropy", entropy.mean(1))
            self._add(i, "attn_cls_patch_mass", probs[..., self.prefix :].sum(-1).mean(1))

        return hook

    def _output(self, i: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            norms = out.float().norm(dim=-1)
            patch = norms[:, self.prefix :]
            high = (patch > self.factor * patch.median(1, keepdim=True).values).float().sum(1)
            self._add(i, "norm_cls", norms[:, 0])
            self._add(i, "norm_patch", patch.mean(1))
            self._add(i, "outliers", high)
            self._add(i, "outlier_frac", high / patch.shape[1])

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def analysis(
    model: VisionTransformer,
    config: AnalysisConfig,
    cache: FeatureCache | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """``block<i>.<metric>`` for every block and every name in :data:`METRICS` (see the module
    docstring), averaged over the first ``max_images`` images of the validation split."""
    if getattr(model, "cls_token", None) is None:
        raise EvalError("eval.analysis: the backbone has no CLS token to analyse")
    dataset = config.build(config.val_split, dense_eval(config.size(model)))
    count = min(config.max_images, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(count))
    recorder = _Recorder(model, config.outlier_factor)
    model.eval()
    try:
        with any_size(model):
            for batch in progress_iter(config.loader(subset), "analysis", progress):
                model.forward_features(batch["image"].to(next(model.parameters()).device))
    finally:
        recorder.remove()
    out = {}
    for i, block in enumerate(cast(Sequence[Block], model.blocks)):
        stats = {name: total / count for name, total in recorder.sums[i].items()}
        g_cls, g_patch = _gammas(block.norm1)
        stats["ln_gamma_abs_cls"] = float(g_cls.abs().mean())
        stats["ln_gamma_abs_patch"] = float(g_patch.abs().mean())
        stats["ln_gamma_cos"] = float(F.cosine_similarity(g_cls.flatten(), g_patch.flatten(), dim=0))
        out.update({f"block{i}.{name}": stats[name] for name in METRICS})
    return out
