"""Stochastic depth in DINOv2's batch-subset form.

DINOv2 (``dinov2/layers/block.py``: ``drop_add_residual_stochastic_depth`` and its list form,
which its student always takes, one subset per crop size) does not compute a residual branch and
then zero it per sample: each branch runs on a random ``max(int(b (1 - rate)), 1)`` of the
batch's ``b`` samples only, and is added to those samples scaled by ``b / subset``; the others
pass unchanged. Its expectation is per-sample DropPath's, and the dropped samples cost nothing.

A :class:`SubsetDropPath` in a block's ``drop_path1`` / ``drop_path2`` asks for this form, and the
block runs it: :class:`SubsetBlock` for timm's Block, model.vit's ``_SplitBlock`` for a
specialized one. Called as a module (a forward these do not run: an attention mask, or hooks
inside a specialized block), it is timm's per-sample DropPath, the same in expectation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timm.layers import DropPath
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

Subset = tuple[torch.Tensor, float]  # (indices of the samples that get the residual, their scale)


class SubsetDropPath(DropPath):
    """Marks DINOv2's batch-subset stochastic depth at ``drop_prob`` (see the module docstring)."""

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, batch subset"


def draw_subset(drop: nn.Module, batch: int, device: torch.device, training: bool) -> Subset | None:
    """The samples a residual branch runs on and their scale, or None when the branch runs on the
    whole batch (evaluation, rate 0, or a drop path other than SubsetDropPath)."""
    if not (training and isinstance(drop, SubsetDropPath) and drop.drop_prob > 0):
        return None
    keep = max(int(batch * (1 - drop.drop_prob)), 1)
    return torch.randperm(batch, device=device)[:keep], batch / keep


def _residual(
    x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], drop: nn.Module, training: bool
) -> torch.Tensor:
    subset = draw_subset(drop, x.shape[0], x.device, training)
    if subset is None:
        return x + drop(branch(x))
    index, scale = subset
    part = x.index_select(0, index)
    # as DINOv2's index_add: x + scale * residual, the residual cast to the stream's dtype first
    return x.index_copy(0, index, torch.add(part, branch(part).to(x.dtype), alpha=scale))


class SubsetBlock(Block):
    """timm's Block with its residual branches on a batch subset when its drop paths ask for it."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None:  # a per-sample mask would need the subset too
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        x = _residual(
            x,
            lambda v: self.ls1(self.attn(self.norm1(v), is_causal=is_causal)),
            self.drop_path1,
            self.training,
        )
        return _residual(x, lambda v: self.ls2(self.mlp(self.norm2(v))), self.drop_path2, self.training)


def set_drop_path(vit: VisionTransformer, rate: float, uniform: bool, subset: bool) -> None:
    """Stochastic depth of every block: ``rate`` in each (``uniform``, as DINOv2 and DeiT-III) or
    timm's linear ramp to ``rate`` as built, per sample (timm's DropPath) or on a batch subset
    (``subset``, DINOv2). Blocks still timm's own become SubsetBlocks for the subset form."""
    for block in vit.blocks:
        current = block.drop_path1.drop_prob if isinstance(block.drop_path1, DropPath) else 0.0
        block_rate = rate if uniform else current
        if block_rate <= 0:
            continue
        cls = SubsetDropPath if subset else DropPath
        block.drop_path1, block.drop_path2 = cls(block_rate), cls(block_rate)
        if subset and type(block) is Block:
            block.__class__ = SubsetBlock
