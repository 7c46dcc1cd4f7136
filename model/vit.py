"""Specialized ViT: separate CLS-path and patch-path weights for chosen layers of a timm ViT.

The paper (design.md §1) gives selected layers two sets of weights: one for the CLS token
(and, by choice, the register tokens), one for the patch tokens. We keep timm's
VisionTransformer and swap each chosen leaf module (``blocks.i.norm1``, ``blocks.i.attn.qkv``,
...) for a :class:`TokenSplit` that runs a CLS copy on the prefix slice of the sequence and a
patch copy on the rest, then concatenates. Every token still goes through exactly one copy and
Q, K, V of all tokens meet in the same attention, so FLOPs equal the plain model's; only
parameters grow. In a timm ``Block`` with a specialized linear layer or LayerScale, the two
paths stay in separate tensors across each run of token-wise layers and meet only in attention
and at the block output (:class:`_SplitBlock`, token-major inside so that the paths are
contiguous slices), which costs far less than a split and a concatenation around every layer;
the parameters and their names are the same. A specialized LayerNorm needs neither: it runs as
one norm over the sequence with the CLS tokens redone (:class:`_SplitLayerNorm`), so blocks whose
only specialized layers are norms keep timm's forward at almost no cost.

Spec format (``model.specialize`` in study files, ``--spec`` on the command line):

* a mapping ``component -> blocks`` where component is one of :data:`BLOCK_COMPONENTS` and
  blocks is ``"all"``, ``"first_third"``, ``"first_half"``, an int ``k`` (the first k blocks),
  a fraction ``f`` in (0, 1] as a float or an exact ``"p/q"`` string (the first
  ``max(1, floor(f * depth + 0.5))`` blocks, i.e. rounded half up: a third of 12 blocks is 4, of 24
  is 8, of 40 is 13, of 4 is 1; ``"1/12"`` is 1 of 12 and 2 of 24), or a list of block indices;
  plus ``final_norm: true`` and ``registers: cls | patch`` (where register tokens
  go; default ``cls``, as in the paper). Note ``1`` is "the first block", ``1.0`` is "all".
* a preset name, ``+`` combining several: see :data:`PRESETS`. Presets specialize the
  components the model has (they skip ``ls1``/``ls2`` without LayerScale, ``q_norm``/``k_norm``
  without qk_norm, and ``final_norm`` when global_pool='avg' moves the final norm after pooling);
  an explicit mapping naming a missing component is an error (``skip_missing: true`` opts in).
* ``None``, ``{}`` or ``"none"``: the plain ViT.

DDP note: with a loss on the CLS token alone (token pooling, no dense loss), the patch path of
``final_norm`` and of the last block's ``proj``/``ls1``/``norm2``/``fc1``/``fc2``/``ls2`` cannot
affect the loss, yet it stays in the autograd graph (the paths are joined, then the CLS token is
sliced out), so those copies get zero gradients, not none: DDP needs no
``find_unused_parameters`` (with it, DDP warns that it found no unused parameter). A rehearsal of a
multi-process config (model.rehearsal) takes two DDP steps in a row, where DDP would fail on one.
"""

from __future__ import annotations

import argparse
import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from timm.layers import DropPath, GluMlp, LayerNorm, Mlp, SwiGLUPacked
from timm.layers.attention import Attention
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from model.droppath import SubsetBlock, draw_subset

__all__ = [
    "BLOCK_COMPONENTS",
    "PRESETS",
    "SCALES",
    "ComponentParams",
    "Flops",
    "ParamReport",
    "Spec",
    "SpecError",
    "TokenSplit",
    "build_vit",
    "flops",
    "param_report",
    "spec_from_state_dict",
    "specialize",
]

# component -> (attribute path inside a timm Block, sequence dim of the module's input)
_BLOCK_PATHS: dict[str, tuple[str, int]] = {
    "norm1": ("norm1", 1),
    "qkv": ("attn.qkv", 1),
    "q_norm": ("attn.q_norm", 2),  # q/k are [B, heads, N, head_dim]
    "k_norm": ("attn.k_norm", 2),
    "proj": ("attn.proj", 1),
    "ls1": ("ls1", 1),
    "norm2": ("norm2", 1),
    "fc1": ("mlp.fc1", 1),
    "fc2": ("mlp.fc2", 1),
    "ls2": ("ls2", 1),
}
BLOCK_COMPONENTS: tuple[str, ...] = tuple(_BLOCK_PATHS)
_NAMED_FRACTIONS = {"first_third": Fraction(1, 3), "first_half": Fraction(1, 2)}
_RATIO = re.compile(r"\d+/\d+")  # an exact fraction of the depth, e.g. '1/12'
_SELECTION_HELP = (
    "'all', 'first_third', 'first_half', an int k >= 1 (first k blocks), "
    "a fraction in (0, 1] (a float or 'p/q') or a list of block indices"
)

PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "norms": {"norm1": "all", "norm2": "all", "final_norm": True},
    "norms_third": {"norm1": "first_third", "norm2": "first_third"},
    "qkv_third": {"qkv": "first_third"},
    "qkv_half": {"qkv": "first_half"},
    "all": {**{c: "all" for c in BLOCK_COMPONENTS}, "final_norm": True},
}

# Giant follows timm's vit_giant_patch14_dinov2 (DINOv2 ViT-g: SwiGLU FFN, hidden 4096 per branch);
# LayerScale is a training-recipe choice left to timm_kwargs (init_values) at every scale.
SCALES: dict[str, dict[str, Any]] = {
    "micro": dict(embed_dim=96, depth=4, num_heads=3),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
    "giant": dict(
        embed_dim=1536,
        depth=40,
        num_heads=24,
        mlp_ratio=2.66667 * 2,
        mlp_layer=SwiGLUPacked,
        act_layer=nn.SiLU,
    ),
}


class SpecError(ValueError):
    """A specialization spec a user can fix; the message names the key and what was expected."""


Selection = str | int | float | tuple[int, ...]


def _check_selection(component: str, value: Any) -> Selection:
    if isinstance(value, bool):
        raise SpecError(f"specialize.{component}: got {value!r}; expected {_SELECTION_HELP}")
    if isinstance(value, str):
        if _RATIO.fullmatch(value):
            p, q = map(int, value.split("/"))
            if not 0 < p <= q:
                raise SpecError(f"specialize.{component}: fraction {value!r} must be in (0, 1]")
            return value
        if value != "all" and value not in _NAMED_FRACTIONS:
            raise SpecError(
                f"specialize.{component}: unknown block selection {value!r}; expected {_SELECTION_HELP}"
            )
        return value
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"specialize.{component}: first-k count {value} must be >= 1")
        return value
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise SpecError(f"specialize.{component}: fraction {value} must be in (0, 1]")
        return value
    if (
        isinstance(value, Sequence)
        and value
        and all(isinstance(i, int) and not isinstance(i, bool) for i in value)
    ):
        if min(value) < 0:
            raise SpecError(f"specialize.{component}: block indices must be >= 0, got {list(value)}")
        return tuple(sorted(set(value)))
    raise SpecError(f"specialize.{component}: got {value!r}; expected {_SELECTION_HELP}")


@dataclass(frozen=True)
class Spec:
    """Which components get CLS/patch weights, in which blocks, and where registers go.

    ``components`` holds ``(component, selection)`` pairs in :data:`BLOCK_COMPONENTS` order;
    build it with :meth:`parse`, which validates.
    """

    components: tuple[tuple[str, Selection], ...] = ()
    final_norm: bool = False
    registers: Literal["cls", "patch"] | None = None
    skip_missing: bool = False

    @classmethod
    def parse(cls, value: Spec | Mapping[str, Any] | str | None) -> Spec:
        """Accept a Spec, a mapping (YAML form), a preset string ('norms+qkv_third') or None."""
        if isinstance(value, Spec):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            merged: dict[str, Any] = {}
            for name in value.split("+"):
                name = name.strip()
                if name not in PRESETS:
                    raise SpecError(
                        f"specialize: unknown preset {name!r}; expected one of "
                        f"{', '.join(PRESETS)} (combine with '+')"
                    )
                for key, sel in PRESETS[name].items():
                    if key in merged and merged[key] != sel:
                        raise SpecError(
                            f"specialize: presets in {value!r} disagree on {key} ({merged[key]!r} vs {sel!r})"
                        )
                    merged[key] = sel
            return cls.parse({**merged, "skip_missing": True} if merged else {})
        if not isinstance(value, Mapping):
            raise SpecError(
                f"specialize: got {type(value).__name__}; expected a mapping "
                f"component -> blocks, a preset name or null"
            )
        unknown = set(value) - set(BLOCK_COMPONENTS) - {"final_norm", "registers", "skip_missing"}
        if unknown:
            raise SpecError(
                f"specialize: unknown component {sorted(unknown)[0]!r}; expected one of "
                f"{', '.join(BLOCK_COMPONENTS)}, final_norm, registers"
            )
        for key in ("final_norm", "skip_missing"):
            if not isinstance(value.get(key, False), bool):
                raise SpecError(f"specialize.{key}: got {value[key]!r}; expected true or false")
        registers = value.get("registers")
        if registers not in (None, "cls", "patch"):
            raise SpecError(f"specialize.registers: got {registers!r}; expected 'cls' or 'patch'")
        return cls(
            components=tuple((c, _check_selection(c, value[c])) for c in BLOCK_COMPONENTS if c in value),
            final_norm=value.get("final_norm", False),
            registers=registers,
            skip_missing=value.get("skip_missing", False),
        )

    def __bool__(self) -> bool:
        return bool(self.components) or self.final_norm

    def resolve(self, depth: int) -> dict[str, list[int]]:
        """Component -> sorted block indices for a model of ``depth`` blocks."""
        out = {}
        for component, sel in self.components:
            if isinstance(sel, tuple):
                if sel[-1] >= depth:
                    raise SpecError(
                        f"specialize.{component}: block index {sel[-1]} out of range "
                        f"for depth {depth} (expected 0..{depth - 1})"
                    )
                out[component] = list(sel)
                continue
            if isinstance(sel, int):
                if sel > depth:
                    raise SpecError(
                        f"specialize.{component}: first {sel} blocks out of range for depth {depth}"
                    )
                k = sel
            else:
                frac = (
                    1
                    if sel == "all"
                    else ((_NAMED_FRACTIONS.get(sel) or Fraction(sel)) if isinstance(sel, str) else sel)
                )
                k = max(1, math.floor(frac * depth + Fraction(1, 2)))
            out[component] = list(range(k))
        return out

    def canonical(self, depth: int) -> dict[str, Any]:
        """What the spec builds at ``depth``, whatever its spelling ('first_third', 1, '1/3' or
        [0] name the same blocks of a 4-block model): the identity of a trained backbone."""
        return {"blocks": self.resolve(depth), "final_norm": self.final_norm, "registers": self.registers}

    def to_dict(self) -> dict[str, Any]:
        """The YAML/checkpoint form; ``Spec.parse(spec.to_dict()) == spec``."""
        out: dict[str, Any] = {c: list(s) if isinstance(s, tuple) else s for c, s in self.components}
        if self.final_norm:
            out["final_norm"] = True
        if self.registers is not None:
            out["registers"] = self.registers
        if self.skip_missing:
            out["skip_missing"] = True
        return out


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming grad (a strided slice of cat's) contiguous."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class _SplitLayerNorm(torch.autograd.Function):
    """A specialized LayerNorm with no split and no concatenation: one LayerNorm over the whole
    sequence with the patch path's affine weights, then the first ``p`` tokens (along ``dim``)
    redone with the CLS path's. Mean and variance do not depend on the weights, so the backward is
    one full LayerNorm backward with the CLS tokens' input gradient redone, and the patch path's
    weight gradients are the full ones less the CLS tokens' share. The extra work is the p tokens'
    normalization done twice: elementwise, a 1/tokens fraction, no matrix FLOPs.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        p: int,
        dim: int,
        eps: float,
        w_cls: torch.Tensor,
        b_cls: torch.Tensor,
        w_patch: torch.Tensor,
        b_patch: torch.Tensor,
    ) -> torch.Tensor:
        shape = (x.shape[-1],)
        x = x.contiguous()
        y, mean, rstd = torch.ops.aten.native_layer_norm(x, shape, w_patch, b_patch, eps)
        y.narrow(dim, 0, p).copy_(F.layer_norm(x.narrow(dim, 0, p), shape, w_cls, b_cls, eps))
        ctx.save_for_backward(x, mean, rstd, w_cls, b_cls, w_patch, b_patch)
        ctx.p, ctx.dim = p, dim
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x, mean, rstd, w_cls, b_cls, w_patch, b_patch = ctx.saved_tensors
        p, dim, shape, mask = ctx.p, ctx.dim, (x.shape[-1],), [True, True, True]
        gx, gw, gb = torch.ops.aten.native_layer_norm_backward(
            g.contiguous(), x, shape, mean, rstd, w_patch, b_patch, mask
        )
        cls = [t.narrow(dim, 0, p).contiguous() for t in (g, x, mean, rstd)]
        gx_cls, gw_cls, gb_cls = torch.ops.aten.native_layer_norm_backward(
            *cls[:2], shape, *cls[2:], w_cls, b_cls, mask
        )
        gx.narrow(dim, 0, p).copy_(gx_cls)
        return gx, None, None, None, gw_cls, gb_cls, gw - gw_cls, gb - gb_cls


def _is_layer_norm(module: nn.Module) -> bool:
    return type(module) in (nn.LayerNorm, LayerNorm) and module.weight is not None and module.bias is not None


class TokenSplit(nn.Module):
    """Runs ``cls`` on the first ``num_cls`` tokens and ``patch`` on the rest (along ``dim``).

    Both start as copies of the wrapped module, so the output is unchanged at creation. A plain
    state dict (``<prefix>weight``) loads into both copies through a load pre-hook. A LayerNorm
    runs as :class:`_SplitLayerNorm` (unless a hook sits on one of its copies).
    """

    def __init__(self, shared: nn.Module, num_cls: int, dim: int, component: str) -> None:
        super().__init__()
        self.cls = shared
        self.patch = copy.deepcopy(shared)
        self.num_cls = num_cls
        self.dim = dim
        self.component = component
        self.register_load_state_dict_pre_hook(self._duplicate_plain_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.along(x, self.dim)

    def along(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The forward with the tokens along ``dim`` (0 in a token-major block); no hooks.
        LayerNorm takes :class:`_SplitLayerNorm` where its input has the weights' dtype (the fp32
        stream, under autocast too; not autocast's bf16 q and k, which F.layer_norm upcasts)."""
        if (
            _is_layer_norm(self.cls)
            and x.dtype == self.cls.weight.dtype
            and not (
                self.cls._forward_hooks
                or self.cls._forward_pre_hooks
                or self.patch._forward_hooks
                or self.patch._forward_pre_hooks
            )
        ):
            return _SplitLayerNorm.apply(
                x,
                self.num_cls,
                dim,
                self.cls.eps,
                self.cls.weight,
                self.cls.bias,
                self.patch.weight,
                self.patch.bias,
            )
        # split (not two narrows): its backward is one cat, not two zero-filled full-size grads.
        # Contiguous slices and grads keep the matmuls and bias-grad sums on their fast paths
        # (measured: 1.07x instead of 1.3x for a fully specialized tiny ViT train step on CPU).
        cls_x, patch_x = x.split([self.num_cls, x.size(dim) - self.num_cls], dim)
        return torch.cat(
            (
                _ContiguousGrad.apply(self.cls(cls_x.contiguous())),
                _ContiguousGrad.apply(self.patch(patch_x.contiguous())),
            ),
            dim=dim,
        )

    def _duplicate_plain_weights(
        self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
    ) -> None:
        for name in self.cls.state_dict():
            plain = prefix + name
            if plain in state_dict and prefix + "cls." + name not in state_dict:
                tensor = state_dict.pop(plain)
                state_dict[prefix + "cls." + name] = tensor
                state_dict[prefix + "patch." + name] = tensor

    def extra_repr(self) -> str:
        return f"component={self.component}, num_cls={self.num_cls}, dim={self.dim}"


def _path(module: nn.Module, route: int) -> nn.Module:
    """The copy of ``module`` that tokens of ``route`` (0: CLS path, 1: patch path) go through."""
    if isinstance(module, TokenSplit):
        return module.cls if route == 0 else module.patch
    return module


def _streamable_mlp(mlp: object) -> bool:
    fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
    linear = (
        fc1 is not None
        and fc2 is not None
        and isinstance(_path(fc1, 0), nn.Linear)
        and isinstance(_path(fc2, 0), nn.Linear)
    )
    return linear and (type(mlp) is Mlp or (type(mlp) is GluMlp and mlp.chunk_dim == -1))


def _mlp(mlp: Mlp | GluMlp, route: int, x: torch.Tensor) -> torch.Tensor:
    """timm's Mlp / GluMlp forward on the tokens of one path."""
    x = _path(mlp.fc1, route)(x)
    if type(mlp) is GluMlp:
        x1, x2 = x.chunk(2, dim=-1)
        x = x1 * mlp.act(x2) if mlp.gate_last else mlp.act(x1) * x2
    else:
        x = mlp.act(x)
    return mlp.drop2(_path(mlp.fc2, route)(mlp.norm(mlp.drop1(x))))


def _linear_into(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """F.linear written into ``out``, a contiguous slice of a larger tensor."""
    out, x = out.flatten(0, -2), x.flatten(0, -2)
    if bias is None:
        torch.mm(x, weight.t(), out=out)
    else:
        torch.addmm(bias, x, weight.t(), out=out)


def _linear_grads(
    ctx: Any,
    g: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    has_bias: bool,
    grad_x: torch.Tensor | None = None,
) -> tuple[Any, ...]:
    """Grads of one path's linear (input into ``grad_x`` when given), as F.linear's backward."""
    g2, x2 = g.contiguous().flatten(0, -2), x.flatten(0, -2)
    gx = None
    if grad_x is not None:
        torch.mm(g2, weight, out=grad_x.flatten(0, -2))
    elif ctx.needs_input_grad[0]:
        gx = (g2 @ weight).view(x.shape)
    return gx, g2.t() @ x2, g2.sum(0) if has_bias else None


class _LinearJoin(torch.autograd.Function):
    """Two token-major paths through their own linear layers, written into one tensor: the
    concatenation of the outputs without its copy (attention's QKV input)."""

    @staticmethod
    def forward(
        ctx: Any,
        x_cls: torch.Tensor,
        x_patch: torch.Tensor,
        w_cls: torch.Tensor,
        b_cls: torch.Tensor | None,
        w_patch: torch.Tensor,
        b_patch: torch.Tensor | None,
    ) -> torch.Tensor:
        p = x_cls.shape[0]
        out = torch.empty(
            (p + x_patch.shape[0], *x_cls.shape[1:-1], w_cls.shape[0]), dtype=x_cls.dtype, device=x_cls.device
        )
        _linear_into(out[:p], x_cls, w_cls, b_cls)
        _linear_into(out[p:], x_patch, w_patch, b_patch)
        ctx.save_for_backward(x_cls, x_patch, w_cls, w_patch)
        ctx.has_bias = b_cls is not None
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[Any, ...]:
        x_cls, x_patch, w_cls, w_patch = ctx.saved_tensors
        p = x_cls.shape[0]
        gx_c, gw_c, gb_c = _linear_grads(ctx, g[:p], x_cls, w_cls, ctx.has_bias)
        gx_p, gw_p, gb_p = _linear_grads(ctx, g[p:], x_patch, w_patch, ctx.has_bias)
        return gx_c, gx_p, gw_c, gb_c, gw_p, gb_p


class _SplitLinear(torch.autograd.Function):
    """The two token-major paths of one tensor (the first ``p`` tokens, the rest) through their
    own linear layers: the input's gradient is written into one tensor, not concatenated
    (attention's output projection)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        p: int,
        w_cls: torch.Tensor,
        b_cls: torch.Tensor | None,
        w_patch: torch.Tensor,
        b_patch: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(x, w_cls, w_patch)
        ctx.p, ctx.has_bias = p, b_cls is not None
        return F.linear(x[:p], w_cls, b_cls), F.linear(x[p:], w_patch, b_patch)

    @staticmethod
    def backward(ctx: Any, g_cls: torch.Tensor, g_patch: torch.Tensor) -> tuple[Any, ...]:
        x, w_cls, w_patch = ctx.saved_tensors
        p = ctx.p
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        _, gw_c, gb_c = _linear_grads(ctx, g_cls, x[:p], w_cls, ctx.has_bias, None if gx is None else gx[:p])
        _, gw_p, gb_p = _linear_grads(
            ctx, g_patch, x[p:], w_patch, ctx.has_bias, None if gx is None else gx[p:]
        )
        return gx, None, gw_c, gb_c, gw_p, gb_p


class _AddJoin(torch.autograd.Function):
    """``cat([a_cls + b_cls, a_patch + b_patch])`` along tokens, added straight into one tensor."""

    @staticmethod
    def forward(
        ctx: Any, a_cls: torch.Tensor, a_patch: torch.Tensor, b_cls: torch.Tensor, b_patch: torch.Tensor
    ) -> torch.Tensor:
        p = a_cls.shape[0]
        out = torch.empty(
            (p + a_patch.shape[0], *a_cls.shape[1:]),
            dtype=torch.promote_types(a_cls.dtype, b_cls.dtype),
            device=a_cls.device,
        )
        torch.add(a_cls, b_cls, out=out[:p])
        torch.add(a_patch, b_patch, out=out[p:])
        ctx.p = p
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return g[: ctx.p], g[ctx.p :], g[: ctx.p], g[ctx.p :]


def _linear_args(split: TokenSplit, x: torch.Tensor, *xs: torch.Tensor | int) -> list[Any]:
    """Inputs and both paths' weights, cast as autocast casts F.linear's."""
    args = [x, *xs, split.cls.weight, split.cls.bias, split.patch.weight, split.patch.bias]
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        args = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    return args


def _drop_path_mask(
    drop: nn.Identity | DropPath, batch: int, t: torch.Tensor, training: bool
) -> torch.Tensor | None:
    """timm's per-sample stochastic-depth factor (one draw shared by both paths) for token-major
    ``t`` ([tokens, batch, dim]), or None."""
    if isinstance(drop, nn.Identity) or drop.drop_prob == 0.0 or not training:
        return None
    keep = 1.0 - drop.drop_prob
    mask = t.new_empty((1, batch, 1)).bernoulli_(keep)
    return mask.div_(keep) if keep > 0.0 and drop.scale_by_keep else mask


def _norm(norm: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``norm`` on the whole token-major ``t``, along its tokens (dim 0) where it is specialized."""
    return norm.along(t, 0) if isinstance(norm, TokenSplit) else norm(t)


def _scaled(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return y if mask is None else y * mask


class _SplitBlock(Block):
    """A timm Block with specialized layers that runs token-major ([tokens, batch, dim]) inside, so
    the CLS-path and patch-path tokens are two contiguous slices of the sequence: splitting the
    sequence is free in the forward and joining it (a concatenation) is free in the backward,
    where in timm's [batch, tokens, dim] layout both copy the whole sequence.

    * norm1 -> qkv: with qkv specialized, both run per path and the paths meet once, where attention
      needs all tokens: both QKV projections write into one tensor (:class:`_LinearJoin`, no
      concatenation; specialized q_norm/k_norm run per path before q, k, v are joined). A
      specialized norm1 before a shared qkv runs per path and is joined.
    * proj -> ls1 -> residual, norm2 -> fc1 -> act -> fc2 -> ls2 -> residual: with proj or ls1
      specialized, the attention output is split (:class:`_SplitLinear` writes its gradient into
      one tensor) and the residual stream stays split through the MLP half when that half has a
      specialized layer; the block joins the paths once, adding the last residual into its output
      (:class:`_AddJoin`). A half without specialized linear layers or LayerScale runs on the
      whole sequence (with a specialized norm run per path and joined).
    * Between two such blocks the stream stays token-major (``token_major_out``, set by
      ``specialize``; timm sees a transposed view); the first one transposes its input once and
      the last one returns timm's layout.

    Same parameters, module names and FLOPs as the Block it replaces (``specialize`` swaps the
    class); stochastic depth draws one per-sample mask for both paths, as timm does, or runs each
    half on DINOv2's batch subset (model.droppath.SubsetDropPath). A forward
    or backward hook anywhere inside the block (e.g. on ``norm1`` or ``attn.qkv``, which must see
    the whole sequence), an attention mask or causal attention take timm's own forward, where each
    TokenSplit splits and joins.
    """

    num_cls: int
    token_major_out: bool

    @staticmethod
    def supports(block: nn.Module) -> bool:
        attn = getattr(block, "attn", None)
        return (
            type(block) in (Block, SubsetBlock)
            and type(attn) is Attention
            and attn.gate is None
            and isinstance(_path(attn.qkv, 0), nn.Linear)
            and _streamable_mlp(block.mlp)
            and all(isinstance(d, (nn.Identity, DropPath)) for d in (block.drop_path1, block.drop_path2))
        )

    def _hooked(self) -> bool:
        return any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
            for m in self.modules()
            if m is not self
        )

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal or self._hooked():
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        t = x.transpose(0, 1)  # free after another _SplitBlock
        t = t if t.is_contiguous() else t.contiguous()
        state = self._half(self._attention, t, self.drop_path1)
        out = self._half(self._mlp, state, self.drop_path2).transpose(0, 1)
        return out if self.token_major_out else out.contiguous()

    def _half(self, fn: Any, state: Any, drop: nn.Identity | DropPath) -> Any:
        """``fn(state, scale)`` for the whole batch with timm's per-sample stochastic-depth factor
        (one draw shared by both paths), or for DINOv2's batch subset (model.droppath) with its
        scale, written back into the untouched samples. ``state`` is token-major, one tensor or
        the two paths' slices."""
        first = state[0] if isinstance(state, list) else state
        subset = draw_subset(drop, first.shape[1], first.device, self.training)
        if subset is None:
            return fn(state, _drop_path_mask(drop, first.shape[1], first, self.training))
        index, scale = subset
        part = (
            [s.index_select(1, index) for s in state]
            if isinstance(state, list)
            else state.index_select(1, index)
        )
        out = fn(part, first.new_full((1, 1, 1), scale))
        if isinstance(out, list):  # the attention half of a whole sequence, left split
            return [
                s.index_copy(1, index, o)
                for s, o in zip(state.split([o.shape[0] for o in out]), out, strict=True)
            ]
        whole = torch.cat(state) if isinstance(state, list) else state
        return whole.index_copy(1, index, out.to(whole.dtype))

    def _attention(self, t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | list[torch.Tensor]:
        """norm1 -> attention -> proj -> ls1, added to ``t`` (split when proj or ls1 is)."""
        attn = cast(Attention, self.attn)
        n, batch, _ = t.shape
        sizes, routes = (self.num_cls, n - self.num_cls), (0, 1)
        heads, head_dim = attn.num_heads, attn.head_dim
        xs = t.split(sizes)

        # attention input
        qkv: torch.Tensor | None = None
        if isinstance(attn.qkv, TokenSplit):
            h = [_path(self.norm1, r)(xs[r]) for r in routes]
            if not (isinstance(attn.q_norm, TokenSplit) or isinstance(attn.k_norm, TokenSplit)):
                qkv = _LinearJoin.apply(*_linear_args(attn.qkv, *h))
            else:  # q/k norms per path, then q, k and v joined
                per = [
                    _path(attn.qkv, r)(h[r])
                    .reshape(sizes[r], batch, 3, heads, head_dim)
                    .permute(2, 1, 3, 0, 4)
                    .unbind(0)
                    for r in routes
                ]
                q = torch.cat([_path(attn.q_norm, r)(per[r][0]) for r in routes], 2)
                k = torch.cat([_path(attn.k_norm, r)(per[r][1]) for r in routes], 2)
                v = torch.cat([per[r][2] for r in routes], 2)
        else:
            qkv = attn.qkv(_norm(self.norm1, t))
        if qkv is not None:
            q, k, v = qkv.reshape(n, batch, 3, heads, head_dim).permute(2, 1, 3, 0, 4).unbind(0)
            q, k = attn.q_norm(q), attn.k_norm(k)
        if attn.fused_attn:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        else:
            o = attn.attn_drop(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v

        # attention output and residual (the reshape to token-major copies, as timm's does)
        o = attn.norm(o.permute(2, 0, 1, 3).reshape(n, batch, attn.attn_dim))
        if isinstance(attn.proj, TokenSplit) or isinstance(self.ls1, TokenSplit):
            if isinstance(attn.proj, TokenSplit):
                parts = _SplitLinear.apply(*_linear_args(attn.proj, o, self.num_cls))
            else:
                parts = [attn.proj(o_r) for o_r in o.split(sizes)]
            return [xs[r] + _scaled(_path(self.ls1, r)(attn.proj_drop(parts[r])), mask) for r in routes]
        return t + _scaled(self.ls1(attn.proj_drop(attn.proj(o))), mask)

    def _mlp(self, state: torch.Tensor | list[torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        """norm2 -> MLP -> ls2, added to ``state``; the paths joined (a whole token-major tensor)."""
        mlp = cast(Mlp | GluMlp, self.mlp)
        routes = (0, 1)
        if any(isinstance(m, TokenSplit) for m in (mlp.fc1, mlp.fc2, self.ls2)) or (
            isinstance(state, list) and isinstance(self.norm2, TokenSplit)
        ):
            xs = state if isinstance(state, list) else state.split((self.num_cls, len(state) - self.num_cls))
            residuals = [
                _scaled(_path(self.ls2, r)(_mlp(mlp, r, _path(self.norm2, r)(xs[r]))), mask) for r in routes
            ]
            return _AddJoin.apply(*xs, *residuals)
        if isinstance(state, list):
            state = torch.cat(state)
        return state + _scaled(self.ls2(mlp(_norm(self.norm2, state))), mask)


class Specialization(nn.Module):
    """Parameter-free child ``vit.specialization`` that carries the spec in the state dict.

    Its extra state (key ``specialization._extra_state``) is ``{"spec": Spec.to_dict(),
    "num_cls_tokens": int}``; loading a checkpoint whose spec builds other blocks raises SpecError
    (one spelled differently loads), and a plain timm state dict (without the key) loads as is.
    """

    def __init__(self, spec: Spec, num_cls: int, depth: int) -> None:
        super().__init__()
        self.spec = spec
        self.num_cls = num_cls
        self.depth = depth
        self.register_load_state_dict_pre_hook(self._accept_plain)

    def get_extra_state(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "num_cls_tokens": self.num_cls}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        theirs = Spec.parse(state["spec"]).canonical(self.depth)
        if theirs != self.spec.canonical(self.depth) or state["num_cls_tokens"] != self.num_cls:
            raise SpecError(
                f"checkpoint spec {state['spec']} ({state['num_cls_tokens']} CLS-path "
                f"tokens) differs from the model's {self.spec.to_dict()} "
                f"({self.num_cls}); specialize with spec_from_state_dict(state_dict)"
            )

    def _accept_plain(self, module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())

    def extra_repr(self) -> str:
        return f"spec={self.spec.to_dict()}, num_cls={self.num_cls}"


def _missing(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def specialize(vit: VisionTransformer, spec: Spec | Mapping[str, Any] | str | None) -> VisionTransformer:
    """Specialize a timm VisionTransformer in place (and return it); outputs are unchanged.

    Works on any timm ViT: built here, by ``timm.create_model`` or loaded from a checkpoint.
    """
    spec = Spec.parse(spec)
    if not isinstance(vit, VisionTransformer):
        raise SpecError(f"specialize: expected a timm VisionTransformer, got {type(vit).__name__}")
    if hasattr(vit, "specialization"):
        raise SpecError("specialize: the model is already specialized")
    if spec.registers is not None and vit.num_reg_tokens == 0:
        raise SpecError(
            f"specialize.registers: routed to {spec.registers!r} but the model has no "
            f"register tokens (registers: 0)"
        )
    if not spec:
        return vit
    if spec.registers == "patch":
        num_cls = int(vit.has_class_token)  # timm order: [cls, registers..., patches]
    else:
        num_cls = vit.num_prefix_tokens
    if num_cls == 0:
        raise SpecError("specialize: the model has no CLS token (class_token=False) for the CLS path")

    targets: list[tuple[nn.Module, str, int, str]] = []
    for component, blocks in spec.resolve(len(vit.blocks)).items():
        path, dim = _BLOCK_PATHS[component]
        *parents, leaf = path.split(".")
        for i in blocks:
            parent = vit.blocks[i].get_submodule(".".join(parents)) if parents else vit.blocks[i]
            if _missing(getattr(parent, leaf, None)):
                if spec.skip_missing:
                    break
                raise SpecError(
                    f"specialize.{component}: block {i} has no {path} "
                    f"(e.g. ls1/ls2 need init_values, q_norm/k_norm need qk_norm=True)"
                )
            targets.append((parent, leaf, dim, component))
    if spec.final_norm:
        if not _missing(vit.norm):
            targets.append((vit, "norm", 1, "final_norm"))
        elif not spec.skip_missing:
            raise SpecError(
                "specialize.final_norm: the model has no token-level final norm "
                f"(global_pool={vit.global_pool!r} normalizes pooled patch features "
                "with fc_norm); drop final_norm from the spec"
            )
    for parent, leaf, dim, component in targets:
        setattr(parent, leaf, TokenSplit(getattr(parent, leaf), num_cls, dim, component))
    # a block whose only specialized layers are norms keeps timm's forward
    for block in cast(Sequence[Block], vit.blocks):
        if _SplitBlock.supports(block) and any(
            isinstance(m, TokenSplit)
            for m in (block.attn.qkv, block.attn.proj, block.ls1, block.mlp.fc1, block.mlp.fc2, block.ls2)
        ):
            block.__class__ = _SplitBlock
            cast(_SplitBlock, block).num_cls = num_cls
    for current, after in zip(vit.blocks, [*vit.blocks[1:], None], strict=True):
        if isinstance(current, _SplitBlock):
            current.token_major_out = isinstance(after, _SplitBlock)
    vit.specialization = Specialization(spec, num_cls, len(vit.blocks))
    return vit


def spec_from_state_dict(state_dict: Mapping[str, Any]) -> Spec:
    """The spec a checkpoint was saved with (an empty Spec for a plain timm state dict)."""
    state = state_dict.get("specialization._extra_state")
    return Spec.parse(state["spec"] if state else None)


def build_vit(
    scale: str = "tiny",
    *,
    img_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    num_classes: int = 1000,
    registers: int = 0,
    specialize: Spec | Mapping[str, Any] | str | None = None,
    **timm_kwargs: Any,
) -> VisionTransformer:
    """A timm ViT of a named scale (:data:`SCALES`), specialized by ``specialize``.

    ``timm_kwargs`` go to timm's VisionTransformer and override the scale's defaults (e.g.
    ``depth=2`` for a shallow test model, ``init_values=1e-5`` for LayerScale, ``device='meta'``).
    """
    if scale not in SCALES:
        raise SpecError(f"model.scale: unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    vit = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        num_classes=num_classes,
        reg_tokens=registers,
        **{**SCALES[scale], **timm_kwargs},
    )
    return _specialize(vit, specialize)


_specialize = specialize  # build_vit's keyword argument shadows the function


@dataclass(frozen=True)
class ComponentParams:
    component: str
    blocks: tuple[int, ...]  # empty for final_norm
    extra: int


@dataclass(frozen=True)
class ParamReport:
    total: int
    extra: int
    components: tuple[ComponentParams, ...] = field(default=())

    @property
    def base(self) -> int:
        """Parameters of the unspecialized model."""
        return self.total - self.extra

    @property
    def extra_pct(self) -> float:
        return 100.0 * self.extra / self.base


def param_report(model: nn.Module) -> ParamReport:
    """Total parameters, parameters added by specialization (the patch copies), per component."""
    per: dict[str, tuple[list[int], int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, TokenSplit):
            blocks, extra = per.get(module.component, ([], 0))
            match = re.search(r"blocks\.(\d+)\.", name)
            per[module.component] = (
                blocks + [int(match[1])] if match else blocks,
                extra + sum(p.numel() for p in module.patch.parameters()),
            )
    order = [*BLOCK_COMPONENTS, "final_norm"]
    comps = tuple(ComponentParams(c, tuple(per[c][0]), per[c][1]) for c in order if c in per)
    return ParamReport(
        total=sum(p.numel() for p in model.parameters()), extra=sum(c.extra for c in comps), components=comps
    )


# The CPU SDPA kernel has no formula in torch.utils.flop_counter (it would count 0).
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_registry:

    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _cpu_sdpa_backward_flop(
        grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
    ) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


@dataclass(frozen=True)
class Flops:
    forward: int
    forward_backward: int


def flops(model: VisionTransformer, img_size: int | tuple[int, int], batch_size: int = 1) -> Flops:
    """FLOPs of one forward and one forward+backward pass (torch.utils.flop_counter).

    Runs the model on random input on its own device (``meta`` works and is instant); the
    backward uses autograd.grad, so ``.grad`` of the parameters is left untouched.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    param = next(model.parameters())
    x = torch.randn(
        batch_size, model.patch_embed.proj.in_channels, h, w, device=param.device, dtype=param.dtype
    )
    params = [p for p in model.parameters() if p.requires_grad]
    with FlopCounterMode(display=False) as fwd:
        model(x)
    with FlopCounterMode(display=False) as both:
        torch.autograd.grad(model(x).sum(), params)
    return Flops(fwd.get_total_flops(), both.get_total_flops())


def _ranges(blocks: Sequence[int]) -> str:
    """'0-3,7' for [0, 1, 2, 3, 7]; '-' for none (final_norm)."""
    runs: list[list[int]] = []
    for i in blocks:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "-"


def _print_report(
    scale: str, spec: str, img_size: int, patch_size: int, registers: int, num_classes: int
) -> None:
    from rich.console import Console
    from rich.table import Table

    kw: dict[str, Any] = dict(
        img_size=img_size, patch_size=patch_size, num_classes=num_classes, registers=registers, device="meta"
    )
    model = build_vit(scale, specialize=spec, **kw)
    report = param_report(model)
    fl, plain_fl = flops(model, img_size), flops(build_vit(scale, **kw), img_size)
    table = Table(title=f"ViT-{scale} ({img_size}px, patch {patch_size}), spec {spec!r}")
    for col in ("component", "blocks", "extra params", "% of base"):
        table.add_column(col, justify="left" if col in ("component", "blocks") else "right")
    for c in report.components:
        table.add_row(c.component, _ranges(c.blocks), f"{c.extra:,}", f"{100 * c.extra / report.base:.3f}")
    table.add_section()
    table.add_row("total", "", f"{report.total:,}", f"+{report.extra_pct:.3f}")
    table.add_row("base (plain ViT)", "", f"{report.base:,}", "")
    table.add_section()
    table.add_row(
        "GFLOPs forward (plain ViT)", "", f"{fl.forward / 1e9:.3f}", f"({plain_fl.forward / 1e9:.3f})"
    )
    table.add_row(
        "GFLOPs fwd+bwd (plain ViT)",
        "",
        f"{fl.forward_backward / 1e9:.3f}",
        f"({plain_fl.forward_backward / 1e9:.3f})",
    )
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model.vit",
        description=(
            "Parameter report and FLOPs (batch 1, 2 FLOPs per multiply-add) of a specialized ViT; "
            "built on the meta device, so any scale is instant."
        ),
    )
    parser.add_argument("--scale", default="base", choices=list(SCALES))
    parser.add_argument("--spec", default="none", help=f"preset(s) joined by '+': {', '.join(PRESETS)}")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--registers", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        _print_report(args.scale, args.spec, args.img_size, args.patch_size, args.registers, args.num_classes)
    except SpecError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
