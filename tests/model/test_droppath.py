"""DINOv2's batch-subset stochastic depth (model.droppath): its formula, its expectation, and the
specialized block (model.vit._SplitBlock) equal to the plain one when the paths' weights agree."""

from __future__ import annotations

import pytest
import torch
from timm.layers import DropPath
from timm.models.vision_transformer import Block
from torch.nn import Identity

from model.droppath import SubsetBlock, SubsetDropPath, set_drop_path
from model.frameworks.base import build_backbone
from model.vit import specialize

CFG = {
    "scale": "micro",
    "depth": 2,
    "img_size": 16,
    "patch_size": 4,
    "drop_path_rate": 0.5,
    "drop_path_subset": True,
}


def _vit(seed: int = 0, **kw):
    torch.manual_seed(seed)
    vit = build_backbone({**CFG, **kw}, init_values=0.5)
    with torch.no_grad():  # weights away from their init, so that a wrong copy would show
        for p in vit.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return vit


def _tokens(batch: int = 5) -> torch.Tensor:
    return torch.randn(batch, 17, 96, generator=torch.Generator().manual_seed(1))


def _dinov2_subset_residual(x, branch, rate):
    """drop_add_residual_stochastic_depth as recipes.md §1a states it: the branch on a random
    max(int(b (1 - rate)), 1) samples, index-added to them scaled by b / subset."""
    b = len(x)
    keep = max(int(b * (1 - rate)), 1)
    index = torch.randperm(b)[:keep]
    return torch.index_add(x.flatten(1), 0, index, branch(x[index]).flatten(1), alpha=b / keep).view_as(x)


def test_subset_block_is_dinov2s_formula_and_plain_in_eval():
    block = _vit().blocks[0]
    assert type(block) is SubsetBlock and isinstance(block.drop_path1, SubsetDropPath)
    x = _tokens()
    block.train()
    torch.manual_seed(7)
    out = block(x)
    torch.manual_seed(7)
    ref = _dinov2_subset_residual(x, lambda v: block.ls1(block.attn(block.norm1(v))), 0.5)
    ref = _dinov2_subset_residual(ref, lambda v: block.ls2(block.mlp(block.norm2(v))), 0.5)
    torch.testing.assert_close(out, ref)
    unchanged = (out == x).flatten(1).all(1)
    assert 0 < unchanged.sum() < len(x)  # some samples skipped both branches, not all
    block.eval()
    plain = x + block.ls1(block.attn(block.norm1(x)))
    torch.testing.assert_close(block(x), plain + block.ls2(block.mlp(block.norm2(plain))))


@pytest.mark.parametrize("subset", [True, False], ids=["batch-subset", "timm-per-sample"])
def test_stochastic_depth_keeps_the_residual_in_expectation(subset):
    """A block whose MLP branch is off (ls2 = 0): its output averaged over draws is the eval output,
    for the subset form (2 of 4 samples, scaled by 2) as for timm's per-sample DropPath."""
    block = _vit(drop_path_subset=subset).blocks[0]
    assert isinstance(block.drop_path1, SubsetDropPath) == subset and isinstance(block.drop_path1, DropPath)
    with torch.no_grad():
        block.ls2.gamma.zero_()
        x = _tokens(4)
        expected = block.eval()(x)
        block.train()
        torch.manual_seed(0)
        mean = sum(block(x) for _ in range(400)) / 400
    residual = (expected - x).abs().mean()
    assert (mean - expected).abs().mean() < 0.1 * residual


@pytest.mark.parametrize("spec", ["all", {"qkv": "all"}, {"proj": "all", "fc2": [1]}, "norms"])
def test_specialized_block_equals_plain_with_batch_subsets(spec):
    """Freshly specialized (both paths the plain weights), in training: the same subsets are drawn,
    so outputs and gradients equal the plain SubsetBlocks'."""
    plain = _vit()
    special = build_backbone(CFG, init_values=0.5)
    special.load_state_dict(plain.state_dict())
    specialize(special, spec)
    if spec != "norms":
        assert all(type(b).__name__ == "_SplitBlock" for b in special.blocks)
    images = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    outs = []
    for model in (plain, special):
        model.train()
        torch.manual_seed(3)
        out = model.forward_features(images)
        (out**2).mean().backward()
        outs.append(out)
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    summed: dict[str, torch.Tensor] = {}  # a specialized layer's two copies share the plain layer's gradient
    for name, p in special.named_parameters():
        plain_name = name.replace(".cls.", ".").replace(".patch.", ".")
        summed[plain_name] = summed.get(plain_name, 0) + p.grad
    for name, p in plain.named_parameters():
        torch.testing.assert_close(summed[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_set_drop_path_uniform_or_ramp():
    vit = build_backbone({**CFG, "drop_path_uniform": False, "drop_path_rate": 0.4})  # timm's ramp 0, 0.4
    assert type(vit.blocks[0].drop_path1) is Identity and type(vit.blocks[0]) is Block
    assert type(vit.blocks[1].drop_path1) is SubsetDropPath
    assert vit.blocks[1].drop_path1.drop_prob == pytest.approx(0.4)
    assert type(vit.blocks[1]) is SubsetBlock
    set_drop_path(vit, 0.2, uniform=True, subset=False)
    assert [type(b.drop_path2) for b in vit.blocks] == [DropPath, DropPath]
    assert [b.drop_path2.drop_prob for b in vit.blocks] == [0.2, 0.2]
