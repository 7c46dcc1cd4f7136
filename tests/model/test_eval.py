"""Frozen-backbone evaluations on procedural data: sane numbers, stable metric names, the analysis."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.data import IGNORE_INDEX, build_dataset, dense_eval
from model.eval import ANALYSIS_METRICS, EvalError, parse_eval, run_eval
from model.eval.base import LinearDenseHead, tokens
from model.eval.classification import knn_scores
from model.eval.depth import depth_scores
from model.eval.segmentation import slide
from model.vit import build_vit

DATA = {"name": "procedural", "num_classes": 4, "size": 4096}
SMALL = {"dataset": "procedural", "size": 384}


def micro(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_vit("micro", img_size=32, patch_size=4, num_classes=4, depth=2, **kw)


@pytest.fixture(scope="module")
def random_model() -> torch.nn.Module:
    return micro().eval()


@pytest.fixture(scope="module")
def trained_model(random_model) -> torch.nn.Module:
    """Stand-in until a cheap trained backbone is available (see the report): the random init."""
    return random_model


def evaluate(model, name: str, **raw) -> dict[str, float]:
    return run_eval(model, parse_eval(name, {**SMALL, **raw}, DATA))


def test_knn_votes_match_a_brute_force_weighted_vote():
    gen = torch.Generator().manual_seed(0)
    train, query = torch.randn(50, 8, generator=gen), torch.randn(7, 8, generator=gen)
    labels = torch.randint(0, 3, (50,), generator=gen)
    votes = knn_scores(train, labels, query, k=5, temperature=0.07, num_classes=3, chunk=3)
    sims = F.normalize(query, dim=1) @ F.normalize(train, dim=1).T
    for q in range(7):
        top = sims[q].topk(5)
        expected = torch.zeros(3).index_add_(0, labels[top.indices], (top.values / 0.07).exp())
        torch.testing.assert_close(votes[q], expected)


def test_knn_reports_top5_only_over_many_classes(random_model):
    out = evaluate(random_model, "knn")  # 4 classes: top-5 would be 100 % whatever the features
    assert set(out) == {"top1"} and 0 <= out["top1"] <= 100


def test_linear_probe_reports_the_better_feature_choice(trained_model):
    out = evaluate(trained_model, "linear_cls", epochs=20)
    assert set(out) == {"top1", "top1_cls", "top1_cls_avgpool"}
    assert out["top1"] == max(out["top1_cls"], out["top1_cls_avgpool"])
    assert 0 <= out["top1"] <= 100


def _majority_scores() -> tuple[float, float]:
    """mIoU and pixel accuracy of always predicting the most frequent class of the val masks."""
    data = build_dataset("procedural", "val", dense_eval(32), num_classes=4, size=384)
    masks = torch.stack([data[i]["mask"] for i in range(len(data))])
    valid = masks[masks != IGNORE_INDEX]
    counts = torch.bincount(valid, minlength=5).double()
    present = int((counts > 0).sum())
    acc = counts.max() / counts.sum()
    return float(acc / present * 100), float(acc * 100)  # majority IoU = its frequency, others 0


def test_linear_seg_beats_the_majority_class(trained_model):
    out = evaluate(trained_model, "linear_seg", epochs=15)
    assert set(out) == {"miou", "pixel_acc"}
    chance_miou, chance_acc = _majority_scores()
    assert out["miou"] > chance_miou  # even random-init patch tokens separate shapes from background
    assert 0 < out["pixel_acc"] <= 100


def test_sliding_window_covers_the_image_and_matches_a_single_window(trained_model):
    torch.manual_seed(0)
    head = LinearDenseHead(trained_model.embed_dim, 5).eval()
    image = torch.randn(3, 32, 48)
    full = slide(trained_model, head, image, crop=32, stride=32, num_classes=5)
    assert full.shape == (5, 32, 48)  # windows at x = 0 and 16 cover all 48 columns
    square = image[:, :, :32]
    direct = head(tokens(trained_model, square[None])[1], (32, 32))[0]
    torch.testing.assert_close(slide(trained_model, head, square, 32, 21, 5), direct)


def test_linear_seg_slides_over_images_larger_than_the_crop(trained_model):
    out = evaluate(trained_model, "linear_seg", size=32, epochs=1, img_size=16, val_size=32, stride=8)
    assert set(out) == {"miou", "pixel_acc"}
    assert 0 < out["miou"] <= out["pixel_acc"] <= 100


def test_linear_depth_scores_and_masks_invalid_pixels(trained_model):
    out = evaluate(trained_model, "linear_depth", epochs=8)
    assert set(out) == {"rmse", "abs_rel", "delta1"}
    assert out["rmse"] > 0 and out["abs_rel"] > 0 and 0 <= out["delta1"] <= 100
    regression = evaluate(
        trained_model, "linear_depth", head="regression", epochs=1, size=64, cache_features=False
    )
    assert all(math.isfinite(v) for v in regression.values())

    target = torch.tensor([[[2.0, 0.0], [4.0, 0.0]]])
    pred = torch.tensor([[[2.0, 1e6], [4.0, 1e-6]]])  # wrong only where the target is invalid
    assert depth_scores(pred, target) == {"rmse": [0.0], "abs_rel": [0.0], "delta1": [100.0]}


def test_analysis_covers_every_block_with_stable_names():
    model = micro(specialize={"norm1": "all"}).eval()
    with torch.no_grad():
        model.blocks[0].norm1.patch.weight.mul_(-1)  # CLS and patch norm1 weights now differ
    out = run_eval(model, parse_eval("analysis", {"dataset": "procedural", "max_images": 32}, DATA))
    assert set(out) == {f"block{i}.{m}" for i in range(len(model.blocks)) for m in ANALYSIS_METRICS}
    assert all(math.isfinite(v) for v in out.values())
    assert out["block0.ln_gamma_cos"] == pytest.approx(-1.0)
    assert out["block1.ln_gamma_cos"] == pytest.approx(1.0)
    assert 0 < out["block0.attn_cls_patch_mass"] <= 1
    assert 0 < out["block0.attn_cls_entropy"] <= math.log(65) + 1e-6


def test_analysis_attention_entropy_matches_the_materialised_attention(random_model):
    """Recomputed q·k attention of the CLS query equals timm's own unfused attention matrix."""
    images = torch.stack(
        [build_dataset("procedural", "val", dense_eval(32), size=8)[i]["image"] for i in range(8)]
    )
    seen = []
    block = random_model.blocks[1]
    block.attn.fused_attn = False
    handle = block.attn.attn_drop.register_forward_hook(lambda m, i, out: seen.append(out[:, :, 0]))
    try:
        with torch.no_grad():
            random_model.forward_features(images)
    finally:
        handle.remove()
        block.attn.fused_attn = True
    probs = seen[0]
    expected = float(-(probs * probs.log()).sum(-1).mean())

    from model.eval.analysis import _Recorder  # the same 8 images through the analysis hooks

    recorder = _Recorder(random_model, 3.0)
    with torch.no_grad():
        random_model.forward_features(images)
    recorder.remove()
    assert recorder.sums[1]["attn_cls_entropy"] / 8 == pytest.approx(expected, rel=1e-4)


def test_eval_configs_name_the_bad_key_and_inherit_the_pretraining_data():
    with pytest.raises(EvalError, match=r"eval\.knn\.kk: unknown key"):
        parse_eval("knn", {"dataset": "procedural", "kk": 3})
    with pytest.raises(EvalError, match=r"eval\.knn\.k: got 'x'"):
        parse_eval("knn", {"dataset": "procedural", "k": "x"})
    with pytest.raises(EvalError, match=r"eval\.depth: unknown evaluation"):
        parse_eval("depth", {"dataset": "procedural"})
    with pytest.raises(EvalError, match=r"eval\.linear_seg\.dataset"):
        parse_eval("linear_seg", {"dataset": "imagenet"})
    cfg = parse_eval("knn", {"dataset": "procedural"}, DATA)
    assert cfg.dataset_kwargs == {"num_classes": 4, "size": 1024}  # size not inherited: eval default
    assert cfg.to_dict()["k"] == 20 and cfg.to_dict()["temperature"] == 0.07
