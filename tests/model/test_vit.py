"""Specialized ViT: function preservation, gradients, FLOPs, parameter counts, checkpoints, specs."""

from __future__ import annotations

import io

import pytest
import timm
import torch
import torch.distributed as dist
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.vit import (
    BLOCK_COMPONENTS,
    Spec,
    SpecError,
    TokenSplit,
    build_vit,
    flops,
    main,
    param_report,
    spec_from_state_dict,
    specialize,
)

IMG = 16


def _micro(**kw) -> nn.Module:
    """A 2-block micro ViT with every optional component present (qk_norm, LayerScale)."""
    kw = {
        "depth": 2,
        "qk_norm": True,
        "init_values": 0.1,
        "img_size": IMG,
        "patch_size": 4,
        "num_classes": 5,
        **kw,
    }
    return build_vit(kw.pop("scale", "micro"), **kw)


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, so copies that are not exact copies would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _pair(spec, **kw) -> tuple[nn.Module, nn.Module]:
    """(plain, specialized) with identical random weights."""
    plain = _perturb(_micro(**kw))
    special = _micro(**kw)
    special.load_state_dict(plain.state_dict())
    return plain, specialize(special, spec).eval()


def _x(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


ROUTES = [(0, None), (2, "cls"), (2, "patch")]


@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("registers,route", ROUTES)
@pytest.mark.parametrize("component", [*BLOCK_COMPONENTS, "final_norm"])
def test_fresh_specialization_preserves_outputs(component, registers, route, pool):
    spec = {"final_norm": True} if component == "final_norm" else {component: "all"}
    if route:
        spec["registers"] = route
    if component == "final_norm" and pool == "avg":
        with pytest.raises(SpecError, match="final_norm"):
            _pair(spec, registers=registers, global_pool=pool)
        return
    plain, special = _pair(spec, registers=registers, global_pool=pool)
    assert any(isinstance(m, TokenSplit) for m in special.modules())
    x = _x()
    with torch.no_grad():
        assert (special(x) - plain(x)).abs().max() <= 1e-5
        feats = special.forward_intermediates(x, return_prefix_tokens=True, norm=True, output_fmt="NLC")
        ref = plain.forward_intermediates(x, return_prefix_tokens=True, norm=True, output_fmt="NLC")
    assert len(feats[1]) == 2  # per-block tokens, each (patch tokens, prefix tokens)
    for (p, c), (rp, rc) in zip(feats[1], ref[1], strict=True):
        assert (p - rp).abs().max() <= 1e-5 and (c - rc).abs().max() <= 1e-5


@pytest.mark.parametrize("scale", ["micro", "tiny", "small", "base", "large", "giant"])
def test_every_scale_preserves_outputs_fully_specialized(scale):
    """Each scale's width/heads/MLP (2 blocks, 32 px) with every component specialized."""
    plain, special = _pair("all", scale=scale, img_size=32, patch_size=8, registers=1)
    assert param_report(special).extra > 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (special(x) - plain(x)).abs().max() <= 1e-5


def _loss_on_all_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Classification on the CLS token plus a dense term on every token (as DINOv2/iBOT do)."""
    feats = model.forward_features(x)
    return model.forward_head(feats).logsumexp(-1).mean() + feats.pow(2).mean()


def test_paths_diverge_after_one_step_and_every_parameter_gets_a_gradient():
    _, model = _pair("all", registers=2)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _loss_on_all_tokens(model, _x()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    opt.step()
    splits = [m for m in model.modules() if isinstance(m, TokenSplit)]
    assert len(splits) == 2 * len(BLOCK_COMPONENTS) + 1
    for m in splits:
        for (name, a), (_, b) in zip(m.cls.named_parameters(), m.patch.named_parameters(), strict=True):
            assert not torch.equal(a, b), f"{m.component}.{name} did not diverge"


def test_ddp_without_unused_parameters(tmp_path):
    _, model = _pair("all", registers=2)
    model.train()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model, find_unused_parameters=False)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        for _ in range(3):  # an unused parameter fails on the second iteration
            feats = ddp.module.forward_features(_x())
            loss = feats.pow(2).mean() + ddp(_x()).logsumexp(-1).mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dim", [0, 1])
def test_a_specialized_layer_norm_equals_its_two_copies_each_on_its_tokens(dim):
    """A specialized LayerNorm runs as one norm with the CLS tokens redone (no split, no
    concatenation); values and every gradient equal each copy run on its own slice."""
    split = TokenSplit(nn.LayerNorm(8, dtype=torch.float64), num_cls=3, dim=1, component="norm1")
    with torch.no_grad():
        for p in split.parameters():
            p.normal_()
    x = torch.randn((4, 10, 8) if dim == 1 else (10, 4, 8), dtype=torch.float64, requires_grad=True)
    out = split.along(x, dim)
    ref = torch.cat([split.cls(x.narrow(dim, 0, 3)), split.patch(x.narrow(dim, 3, 7))], dim)
    g = torch.randn_like(ref)
    inputs = [x, *split.parameters()]
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g), strict=True):
        assert (a - b).abs().max() < 1e-12
    assert torch.autograd.gradcheck(lambda x: split.along(x, dim), (x,))


@pytest.mark.parametrize(
    "spec",
    [
        "all",
        "norms+qkv_third",
        {"proj": "all", "fc2": [1]},
        {"ls1": "all", "k_norm": "all", "registers": "patch"},
    ],
)
def test_streamed_blocks_match_per_layer_forward_and_hooks_see_the_whole_sequence(spec):
    """The block forward that keeps the two paths apart equals timm's per-layer forward (values and
    gradients, in training with stochastic depth), and a forward hook on norm1 / attn.qkv (as
    model/eval/analysis.py sets) makes the block take the per-layer forward and see all tokens."""
    _, streamed = _pair(spec, registers=2, drop_path_rate=0.5)
    per_layer = _micro(registers=2, drop_path_rate=0.5)
    specialize(per_layer, spec).load_state_dict(streamed.state_dict())
    for block in per_layer.blocks:
        block.__class__ = Block  # timm's forward: every TokenSplit splits and concatenates
    linear = ("attn.qkv", "attn.proj", "ls1", "mlp.fc1", "mlp.fc2", "ls2")
    for block in streamed.blocks:
        has_linear = any(isinstance(block.get_submodule(n), TokenSplit) for n in linear)
        assert (type(block) is not Block) == has_linear
    assert any(type(b) is not Block for b in streamed.blocks)
    x = _x()
    for model in (streamed, per_layer):
        model.train()
        torch.manual_seed(3)  # the same stochastic-depth draws
        _loss_on_all_tokens(model, x).backward()
    grads = dict(per_layer.named_parameters())
    for name, p in streamed.named_parameters():
        assert (p.grad - grads[name].grad).abs().max() <= 1e-5, name

    seen = []
    streamed.eval()
    block = streamed.blocks[0]
    hooks = [
        block.norm1.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape))),
        block.attn.qkv.register_forward_hook(lambda m, i, o: seen.append((i[0].shape, o.shape))),
    ]
    with torch.no_grad():
        hooked = streamed(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        assert (hooked - streamed(x)).abs().max() <= 1e-5
    n, d = (IMG // 4) ** 2 + 3, 96
    assert seen == [
        (torch.Size([3, n, d]), torch.Size([3, n, d])),
        (torch.Size([3, n, d]), torch.Size([3, n, 3 * d])),
    ]


def test_flops_equal_plain_forward_and_backward():
    plain, special = _pair("all", registers=2)
    fp, fs = flops(plain, IMG), flops(special, IMG)
    assert fs == fp
    assert 0 < fp.forward < fp.forward_backward


def test_flops_count_cpu_sdpa_like_the_math_path():
    """The registered CPU SDPA formulas count the unfused attention's matmuls (forward), plus
    the kernel's recomputation of q @ k^T in the backward."""
    model = _micro()
    fused = flops(model, IMG)
    for blk in model.blocks:
        blk.attn.fused_attn = False
    unfused = flops(model, IMG)
    n, dim, depth = (IMG // 4) ** 2 + 1, 96, 2
    assert fused.forward == unfused.forward
    assert fused.forward_backward - unfused.forward_backward == depth * 2 * n * n * dim


def _analytic_extra(d: int, depth: int, blocks: dict[str, int], final_norm: bool, mlp: int = 4) -> int:
    per = {
        "norm1": 2 * d,
        "norm2": 2 * d,
        "qkv": 3 * d * d + 3 * d,
        "proj": d * d + d,
        "fc1": mlp * d * d + mlp * d,
        "fc2": mlp * d * d + d,
    }
    return sum(per[c] * n for c, n in blocks.items()) + (2 * d if final_norm else 0)


@pytest.mark.parametrize("scale,d,depth", [("small", 384, 12), ("base", 768, 12), ("large", 1024, 24)])
def test_param_counts_match_analytic_formula(scale, d, depth):
    third = round(depth / 3)
    plain = build_vit(scale, device="meta")
    for spec, blocks, final in [
        ("norms+qkv_third", {"norm1": depth, "norm2": depth, "qkv": third}, True),
        ("all", {c: depth for c in ("norm1", "qkv", "proj", "norm2", "fc1", "fc2")}, True),
        ({"qkv": [0, depth - 1], "norm1": 0.5}, {"qkv": 2, "norm1": depth // 2}, False),
    ]:
        report = param_report(build_vit(scale, specialize=spec, device="meta"))
        assert report.extra == _analytic_extra(d, depth, blocks, final)
        assert report.base == sum(p.numel() for p in plain.parameters())
        assert sum(c.extra for c in report.components) == report.extra
    qkv = next(c for c in param_report(build_vit(scale, specialize="qkv_third", device="meta")).components)
    assert qkv.component == "qkv" and qkv.blocks == tuple(range(third))


def test_vit_base_norms_qkv_third_is_about_8_percent():
    report = param_report(build_vit("base", specialize="norms+qkv_third", device="meta"))
    assert 8.0 < report.extra_pct < 8.5  # the paper's "about +8 %"


def test_state_dict_round_trip_carries_the_spec():
    spec = {"qkv": "first_half", "norm1": [1], "final_norm": True, "registers": "patch"}
    _, model = _pair(spec, registers=2)
    model.train()
    _loss_on_all_tokens(model, _x()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert spec_from_state_dict(state) == Spec.parse(spec)
    restored = specialize(_micro(registers=2), spec_from_state_dict(state)).eval()
    restored.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(restored(_x()), model(_x()))
    respelled = {"qkv": [0], "norm1": [1], "final_norm": True, "registers": "patch"}  # of 2 blocks
    specialize(_micro(registers=2), respelled).load_state_dict(state)  # the same blocks: it loads
    other = specialize(_micro(registers=2), "qkv_third")
    with pytest.raises(SpecError, match="checkpoint spec"):
        other.load_state_dict(state)


def test_loads_plain_timm_state_dict_and_specializes_create_model():
    kw = dict(pretrained=False, img_size=IMG, patch_size=4, depth=2, num_classes=5)
    plain = _perturb(timm.create_model("vit_tiny_patch16_224", **kw))
    special = specialize(timm.create_model("vit_tiny_patch16_224", **kw), "all").eval()
    special.load_state_dict(plain.state_dict())  # strict: every weight lands in both paths
    assert spec_from_state_dict(plain.state_dict()) == Spec()
    with torch.no_grad():
        assert (special(_x()) - plain(_x())).abs().max() <= 1e-5
    qkv = special.blocks[0].attn.qkv
    assert torch.equal(qkv.cls.weight, plain.blocks[0].attn.qkv.weight)
    assert torch.equal(qkv.patch.weight, plain.blocks[0].attn.qkv.weight)


def test_autocast_bf16_and_gradient_checkpointing():
    plain, special = _pair("all", registers=2)
    x = _x()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, ref = special(x), plain(x)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref.float(), atol=0.1, rtol=0.05)
    special.train().set_grad_checkpointing(True)
    with torch.no_grad():
        assert (special(x) - plain(x)).abs().max() <= 1e-5
    special(x).sum().backward()
    assert all(p.grad is not None for n, p in special.named_parameters() if "blocks.0." in n)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    _, special = _pair("norms+qkv_half", registers=2)
    compiled = torch.compile(special)
    with torch.no_grad():
        assert (compiled(_x()) - special(_x())).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "spec,depth,expected",
    [
        ("norms+qkv_third", 12, {"norm1": list(range(12)), "qkv": [0, 1, 2, 3], "norm2": list(range(12))}),
        ({"qkv": "first_third"}, 24, {"qkv": list(range(8))}),
        ({"qkv": "first_third"}, 40, {"qkv": list(range(13))}),
        ({"qkv": "first_third"}, 4, {"qkv": [0]}),
        ({"qkv": 0.01}, 12, {"qkv": [0]}),  # at least one block
        ({"qkv": 0.125}, 12, {"qkv": [0, 1]}),  # 1.5 rounds half up
        ({"qkv": 1}, 12, {"qkv": [0]}),  # int: first k
        ({"qkv": 1.0}, 12, {"qkv": list(range(12))}),  # float: fraction
        ({"qkv": "1/12"}, 12, {"qkv": [0]}),  # exact fraction: the same share at every depth
        ({"qkv": "1/12"}, 24, {"qkv": [0, 1]}),
        ({"qkv": "2/3"}, 24, {"qkv": list(range(16))}),
        ({"qkv": "12/12"}, 12, {"qkv": list(range(12))}),
        ({"fc1": [5, 2, 2]}, 12, {"fc1": [2, 5]}),
        ("qkv_half", 24, {"qkv": list(range(12))}),
    ],
)
def test_spec_resolves_by_depth(spec, depth, expected):
    assert Spec.parse(spec).resolve(depth) == expected


def test_spec_yaml_form_and_presets():
    yaml_spec = {
        "norm1": "first_third",
        "norm2": "first_third",
        "qkv": "first_third",
        "final_norm": True,
        "registers": "cls",
    }
    spec = Spec.parse(yaml_spec)
    assert Spec.parse(spec.to_dict()) == spec and spec.final_norm and spec.registers == "cls"
    assert not Spec.parse({}) and not Spec.parse(None) and not Spec.parse("none")
    assert Spec.parse("norms+qkv_half").final_norm
    assert not hasattr(specialize(_micro(), None), "specialization")


@pytest.mark.parametrize(
    "spec,kw,match",
    [
        ({"mlp": "all"}, {}, "unknown component 'mlp'"),
        ("norms+bogus", {}, "unknown preset 'bogus'"),
        ({"qkv": [0, 2]}, {}, r"specialize.qkv: block index 2 out of range for depth 2"),
        ({"qkv": 3}, {}, r"specialize.qkv: first 3 blocks out of range"),
        ({"qkv": 0.0}, {}, r"specialize.qkv: fraction 0.0 must be in \(0, 1\]"),
        ({"qkv": 1.5}, {}, r"specialize.qkv: fraction 1.5 must be in \(0, 1\]"),
        ({"qkv": "first_quarter"}, {}, "specialize.qkv: unknown block selection"),
        ({"qkv": "13/12"}, {}, r"specialize.qkv: fraction '13/12' must be in \(0, 1\]"),
        ({"qkv": "0/12"}, {}, r"specialize.qkv: fraction '0/12' must be in \(0, 1\]"),
        ({"qkv": "all", "registers": "cls"}, {}, "specialize.registers: .* no register tokens"),
        ({"qkv": "all", "registers": "middle"}, {"registers": 2}, "specialize.registers: got 'middle'"),
        ({"ls1": "all"}, {"init_values": None}, "specialize.ls1: block 0 has no ls1"),
        ({"final_norm": "yes"}, {}, "specialize.final_norm: got 'yes'"),
    ],
)
def test_bad_specs_raise_one_clear_error(spec, kw, match):
    with pytest.raises(SpecError, match=match):
        specialize(_micro(**kw), spec)


def test_presets_skip_components_the_model_lacks():
    model = specialize(_micro(init_values=None, qk_norm=False, global_pool="avg"), "all")
    names = {c.component for c in param_report(model).components}
    assert names == {"norm1", "qkv", "proj", "norm2", "fc1", "fc2"}


def test_cli_prints_report(capsys):
    main(["--scale", "base", "--spec", "norms+qkv_third"])
    out = capsys.readouterr().out
    assert "qkv" in out and "0-3" in out and "+8.231" in out
    with pytest.raises(SystemExit) as exc:
        main(["--scale", "micro", "--spec", "nope"])
    assert exc.value.code == 2
