"""model.frameworks: each framework learns on procedural data, and the pieces behave as the
DINO / iBOT / DINOv2 recipes say (mask token, targets, KoLeo, masking, EMA teacher)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data import build_dataset, finalize
from model.frameworks import FRAMEWORKS, build_framework
from model.frameworks.base import forward_masked, patch_tokens
from model.frameworks.losses import TeacherTargets, koleo_loss, sinkhorn_knopp
from model.frameworks.masking import block_mask
from model.train import pretrain
from model.vit import build_vit

torch.set_num_threads(2)

# a micro ViT cut to 2 blocks, 16 px images of 4x4 patches, small heads: seconds per run on a CPU
MODEL = {"scale": "micro", "img_size": 16, "patch_size": 4, "depth": 2, "specialize": "norms+qkv_third"}
# center_momentum 0.5 (DINO: 0.9): with 0.9 the first few dozen steps are dominated by the center
# catching up from 0 (the loss rises towards ln(out_dim)), which hides whether the student learns
SMALL_HEAD = {
    "recipe": "cpu",
    "out_dim": 256,
    "hidden_dim": 128,
    "bottleneck_dim": 64,
    "n_local": 2,
    "center_momentum": 0.5,
}


class Recorder:
    """The ``ctx`` of model.train.pretrain, keeping what it reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, dict[str, float]]] = []

    def report(self, step: int, metrics: dict[str, float], total: int | None = None) -> None:
        self.reports.append((step, metrics))

    def checkpoint_if_requested(self, save) -> None:
        pass


def _batch(framework, n: int = 8) -> dict:
    data = build_dataset("procedural", "train", size=n, num_classes=4, resolution=16)
    transform = framework.train_transform()
    torch.manual_seed(0)
    return framework.train_collate()([finalize(transform(data.load(i))) for i in range(n)])


@pytest.mark.parametrize("name,registers", [("supervised", 0), ("dino", 0), ("ibot", 1), ("dinov2", 2)])
def test_framework_trains_and_loss_goes_down(tmp_path, name, registers):
    options = {"recipe": "cpu"} if name == "supervised" else SMALL_HEAD
    config = {
        "seed": 0,
        "model": {**MODEL, "registers": registers},
        "framework": {"name": name, **options},
        "data": {"name": "procedural", "num_classes": 4, "size": 64},
        "train": {"steps": 40, "batch_size": 16, "lr": 5e-4, "warmup_steps": 4, "log_every": 10},
    }
    ctx = Recorder()
    backbone, summary = pretrain(config, tmp_path, ctx=ctx, progress=False)
    losses = [m["pretrain.loss"] for _, m in ctx.reports]
    assert [s for s, _ in ctx.reports] == [10, 20, 30, 40]
    assert losses[-1] < losses[0], losses
    assert summary["pretrain.steps"] == 40 and summary["pretrain.steps_run"] == 40
    assert backbone.num_reg_tokens == registers and not backbone.training
    expected_terms = {
        "supervised": set(),
        "dino": {"dino"},
        "ibot": {"dino", "ibot"},
        "dinov2": {"dino", "ibot", "koleo"},
    }[name]
    assert {k.removeprefix("pretrain.") for k in summary} >= expected_terms | {"loss"}


def test_unknown_framework_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="known: supervised, deit3, dino, ibot, dinov2"):
        build_framework(MODEL, {"name": "byol"}, num_classes=4, total_steps=1)
    with pytest.raises(ValueError, match=r"framework.out_dims: unknown key; did you mean 'out_dim'\?"):
        build_framework(MODEL, {"name": "dino", "out_dims": 8}, num_classes=4, total_steps=1)
    assert FRAMEWORKS["deit3"] is FRAMEWORKS["supervised"]


def test_mask_token_replaces_masked_patches_only():
    torch.manual_seed(0)
    vit = build_vit("micro", img_size=16, patch_size=4, depth=2, registers=2, num_classes=0).eval()
    images = torch.randn(2, 3, 16, 16)
    token = torch.randn(1, vit.embed_dim)
    none = torch.zeros(2, 16, dtype=torch.bool)
    torch.testing.assert_close(forward_masked(vit, images, none, token), vit.forward_features(images))
    full = torch.ones(2, 16, dtype=torch.bool)
    out = forward_masked(vit, images, full, token)  # no pixel reaches the model any more
    torch.testing.assert_close(out[0], out[1])
    assert patch_tokens(vit, out).shape == (2, 16, vit.embed_dim)  # CLS + 2 registers dropped


def test_sinkhorn_targets_are_balanced_distributions():
    generator = torch.Generator().manual_seed(0)  # unseeded, the factor-2 claim failed 1 draw in 5
    logits = torch.nn.functional.normalize(torch.randn(64, 16, generator=generator), dim=-1)
    q = sinkhorn_knopp(logits, temp=0.05)  # DINOv2's 3 iterations: balance improved, not exact
    torch.testing.assert_close(q.sum(-1), torch.ones(64))
    softmax = torch.softmax(logits / 0.05, dim=-1)
    assert q.sum(0).std() < softmax.sum(0).std()  # held for 500 of 500 seeds; the median ratio is 0.41
    converged = sinkhorn_knopp(logits, temp=0.05, iterations=200)
    torch.testing.assert_close(converged.sum(0), torch.full((16,), 64 / 16), rtol=0.01, atol=0.0)


def test_center_follows_teacher_mean_and_sharpens():
    targets = TeacherTargets(4, "center", momentum=0.5)
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    probs = targets(logits, temp=0.1)
    torch.testing.assert_close(targets.center, torch.tensor([[0.25, 0.25, 0.0, 0.0]]))
    assert probs[0].argmax() == 0 and probs[0, 0] > 0.99  # sharpened by the low temperature
    with pytest.raises(ValueError, match="centering"):
        TeacherTargets(4, "mean")


def test_koleo_prefers_spread_features():
    spread = torch.eye(8)
    clumped = torch.eye(8) * 0.01 + 1.0
    assert koleo_loss(spread) < koleo_loss(clumped)


def test_block_mask_counts():
    rng = np.random.default_rng(0)
    for n in (6, 20, 32):
        mask = block_mask(8, 8, n, rng)
        assert mask.shape == (8, 8) and n - 4 <= mask.sum() <= n


def test_teacher_is_an_ema_of_the_student_and_stays_in_eval():
    fw = build_framework(
        MODEL, {"name": "ibot", **SMALL_HEAD, "momentum_teacher": 0.9}, num_classes=None, total_steps=100
    )
    fw.train()
    assert not fw.teacher.training and fw.student.training
    assert not any(p.requires_grad for p in fw.teacher.parameters())
    out = fw(_batch(fw), step=0)
    assert set(out) == {"loss", "dino", "ibot"}
    out["loss"].backward()
    assert fw.mask_token.grad is not None and fw.mask_token.grad.abs().sum() > 0
    with torch.no_grad():
        for p in fw.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in fw.teacher.parameters()]
    fw.after_step(0)  # step 0: momentum 0.9
    for t0, t1, s in zip(before, fw.teacher.parameters(), fw.student.parameters(), strict=True):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
