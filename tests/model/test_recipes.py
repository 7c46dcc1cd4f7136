"""The reference recipes as presets: the resolved DINOv2 ViT-L/16 and DeiT-III ViT-B configs
equal ../shared/reference/recipes.md key by key; each schedule at its first, warm-up-end and last
step; layer-wise lr decay; the sources that --print-config shows; the cpu recipe is explicit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torchvision.transforms import InterpolationMode

from model.config import TrainConfig, validate
from model.experiment import check, describe, main
from model.frameworks import build_framework
from model.optim import Schedule, param_groups, peak_lr
from model.recipes import resolve

DATA = {"name": "imagefolder", "root": "/datasets/imagenet"}

# recipes.md §1a (cfg:L<n> of ssl_default_config.yaml = vitl16_short.yaml) and §2
DINOV2_VITL16 = {
    "model.patch_size": 16,
    "model.img_size": 224,
    "model.drop_path_rate": 0.3,
    "model.drop_path_uniform": True,
    "model.drop_path_subset": True,
    "framework.dino_weight": 1.0,
    "framework.koleo_weight": 0.1,
    "framework.out_dim": 65536,
    "framework.bottleneck_dim": 256,
    "framework.head_layers": 3,
    "framework.hidden_dim": 2048,
    "framework.ibot_weight": 1.0,
    "framework.mask_probability": 0.5,
    "framework.mask_ratio": (0.1, 0.5),
    "framework.ibot_separate_head": False,
    "framework.centering": "center",
    "framework.momentum_teacher": 0.992,
    "framework.momentum_teacher_end": 1.0,
    "framework.warmup_teacher_temp": 0.04,
    "framework.teacher_temp": 0.07,
    "framework.warmup_teacher_temp_epochs": 30,
    "framework.layerscale": 1e-5,
    "framework.student_temp": 0.1,
    "framework.center_momentum": 0.9,
    "framework.global_scale": (0.32, 1.0),
    "framework.n_local": 8,
    "framework.local_scale": (0.05, 0.32),
    "framework.local_size": 96,
    "framework.blur": (0.0, 0.9, 0.5),
    "framework.interpolation": "bicubic",
    "framework.norm_last_layer": False,
    "train.betas": (0.9, 0.999),
    "train.optimizer": "adamw",
    "train.epochs": 100,
    "train.epoch_length": 1250,
    "train.lr": 4e-3,
    "train.lr_scaling": "sqrt_wrt_1024",
    "train.warmup_epochs": 10,
    "train.min_lr": 1e-6,
    "train.weight_decay": 0.04,
    "train.weight_decay_end": 0.4,
    "train.clip_grad": 3.0,
    "train.clip_grad_per_module": True,
    "train.freeze_last_layer_epochs": 1,
    "train.patch_embed_lr_mult": 0.2,
    "train.layerwise_decay": 0.9,
    "train.batch_size": 2048,
    "train.warmup_lr": 0.0,
    "train.decay_tokens": True,
    "train.lr_step": "step",
    "train.repeated_aug": 1,
}
# recipes.md §4: README_revenge.md IN-1k pretraining, B row; timm's cosine scheduler defaults
DEIT3_VITB = {
    "model.patch_size": 16,
    "model.img_size": 192,
    "model.drop_path_rate": 0.2,
    "model.drop_path_uniform": True,
    "model.drop_path_subset": False,
    "framework.loss": "bce",
    "framework.label_smoothing": 0.0,
    "framework.layerscale": 1e-4,
    "framework.crop_scale": (0.08, 1.0),
    "framework.interpolation": "bicubic",
    "framework.jitter": 0.3,
    "framework.mixup": 0.8,
    "framework.cutmix": 1.0,
    "train.optimizer": "lamb",
    "train.lr": 3e-3,
    "train.lr_scaling": "none",
    "train.batch_size": 2048,
    "train.epochs": 800,
    "train.weight_decay": 0.05,
    "train.weight_decay_end": None,
    "train.warmup_epochs": 5,
    "train.warmup_lr": 1e-6,
    "train.min_lr": 1e-5,
    "train.betas": (0.9, 0.999),
    "train.clip_grad": None,
    "train.decay_tokens": False,  # timm: no decay on pos_embed and cls_token
    "train.lr_step": "epoch",
    "train.repeated_aug": 3,  # timm's scheduler stepped per epoch; RASampler
}


def _cell(framework: str, scale: str, **framework_keys) -> dict:
    return {
        "model": {"scale": scale},
        "framework": {"name": framework, **framework_keys},
        "data": dict(DATA),
        "train": {},
        "seed": 0,
    }


def _resolved(config: dict) -> dict:
    return {key: tuple(v) if isinstance(v, list) else v for key, v, _ in describe(config)}


@pytest.mark.parametrize(
    "config,reference",
    [
        (_cell("dinov2", "large"), DINOV2_VITL16),
        (_cell("dinov2", "large", recipe="dinov2"), DINOV2_VITL16),
        (_cell("deit3", "base"), DEIT3_VITB),
    ],
    ids=["dinov2-vitl16-by-default", "dinov2-vitl16", "deit3-vitb"],
)
def test_resolved_reference_configs_equal_recipes_md_key_by_key(config, reference):
    resolved = _resolved(config)
    for key, value in reference.items():
        assert resolved[key] == value, key
    assert check({**config, "data": {"name": "procedural"}}) == []


def _schedule(config: dict, dataset_len: int = 1_281_167) -> Schedule:
    from model.train import _steps_per_epoch, _total_steps, epoch_samples

    train = validate(TrainConfig, resolve(config)[0]["train"], "train")
    samples = epoch_samples(dataset_len, train.repeated_aug)
    return Schedule(train, _total_steps(train, samples), _steps_per_epoch(train, samples))


def _cosine_scheduler(
    base: float, final: float, total: int, warmup: int = 0, start: float = 0.0
) -> np.ndarray:
    """DINOv2's CosineScheduler array as recipes.md §2 states it: linspace(start, base, warmup), both
    ends included, then final + (base - final)(1 + cos(pi i / n)) / 2 for i < n = total - warmup."""
    i = np.arange(total - warmup)
    return np.concatenate(
        [np.linspace(start, base, warmup), final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / len(i)))]
    )


def test_schedules_equal_dinov2_cosine_scheduler_at_every_step():
    train = validate(
        TrainConfig,
        {
            "steps": 30,
            "lr": 1.0,
            "min_lr": 0.1,
            "warmup_steps": 7,
            "weight_decay": 0.04,
            "weight_decay_end": 0.4,
        },
        "train",
    )
    s = Schedule(train, 30, 3.0)
    np.testing.assert_allclose([s.lr(i) for i in range(30)], _cosine_scheduler(1.0, 0.1, 30, 7), atol=1e-12)
    np.testing.assert_allclose(
        [s.weight_decay(i) for i in range(30)], _cosine_scheduler(0.04, 0.4, 30), atol=1e-12
    )


def test_dinov2_vitl16_schedules_at_first_warmup_end_and_last_step():
    s = _schedule(_cell("dinov2", "large"))
    # epochs x OFFICIAL_EPOCH_LENGTH
    assert (s.total, s.warmup, s.freeze_last_layer) == (125_000, 12_500, 1250)
    peak = 4e-3 * math.sqrt(2048 / 1024)
    assert peak_lr(s.train) == pytest.approx(5.657e-3, rel=1e-3)
    # linspace(0, peak, 12500): the peak at the warm-up's last step and the cosine's first
    assert s.lr(0) == 0.0 and s.lr(12_499) == pytest.approx(peak) and s.lr(12_500) == pytest.approx(peak)
    assert s.lr(1) == pytest.approx(peak / 12_499)
    last = 1e-6 + 0.5 * (peak - 1e-6) * (1 + math.cos(math.pi * 112_499 / 112_500))  # one step short of min
    assert s.lr(125_000 - 1) == pytest.approx(last, rel=1e-9)
    assert s.weight_decay(0) == pytest.approx(0.04)
    assert s.weight_decay(125_000 - 1) == pytest.approx(0.4, abs=1e-8)
    assert s.last_layer_lr(1249) == 0.0 and s.last_layer_lr(1250) == s.lr(1250) > 0

    resolved = resolve(_cell("dinov2", "large"))[0]
    small = {**resolved["framework"], "out_dim": 16, "hidden_dim": 8, "bottleneck_dim": 4}  # schedules only
    fw = build_framework(
        {"scale": "micro", "depth": 1, "img_size": 32, "patch_size": 16},
        small,
        num_classes=None,
        total_steps=s.total,
        steps_per_epoch=s.steps_per_epoch,
    )
    assert fw.teacher_temp_warmup == 37_500
    assert fw.teacher_temp(0) == pytest.approx(0.04) and fw.teacher_temp(37_499) == pytest.approx(0.07)
    assert fw.teacher_temp(125_000 - 1) == pytest.approx(0.07)
    assert fw.momentum(0) == pytest.approx(0.992) and fw.momentum(125_000 - 1) == pytest.approx(1.0, abs=1e-9)


def test_deit3_vitb_lr_is_timms_scheduler_stepped_once_an_epoch():
    from timm.scheduler import CosineLRScheduler

    s = _schedule(_cell("deit3", "base"))
    per_epoch = 1_281_167 // 256 * 256 / 2048  # an epoch of RASampler's 3 repeats
    assert s.steps_per_epoch == per_epoch and s.total == math.ceil(800 * per_epoch)
    # DeiT's main.py: timm's CosineLRScheduler(t_initial=epochs, warmup_t=5, warmup_lr_init=1e-6,
    # lr_min=1e-5), step(epoch) after each epoch, so epoch k runs at the value of k - 1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3)
    timm_schedule = CosineLRScheduler(opt, t_initial=800, lr_min=1e-5, warmup_t=5, warmup_lr_init=1e-6)
    for epoch in range(800):
        first = math.ceil(epoch * per_epoch)
        assert s.lr(first) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        timm_schedule.step(epoch)
    assert s.lr(0) == s.lr(math.ceil(per_epoch)) == pytest.approx(1e-6)  # epochs 0 and 1

    def cosine(t: int) -> float:
        return 1e-5 + 0.5 * (3e-3 - 1e-5) * (1 + math.cos(math.pi * t / 800))

    assert s.lr(math.ceil(6 * per_epoch)) == pytest.approx(cosine(5))  # not shifted by the warm-up
    assert s.lr(s.total - 1) == pytest.approx(cosine(798))
    assert s.weight_decay(0) == s.weight_decay(s.total - 1) == 0.05


def test_layerwise_decay_patch_embed_multiplier_and_frozen_last_layer():
    resolved = resolve(_cell("dinov2", "large"))[0]
    train = validate(TrainConfig, resolved["train"], "train")
    options = {**resolved["framework"], "out_dim": 16, "hidden_dim": 8, "bottleneck_dim": 4}
    fw = build_framework(
        {"scale": "micro", "depth": 3, "img_size": 32, "patch_size": 16},
        options,
        num_classes=None,
        total_steps=10,
    )
    names = {id(p): n for n, p in fw.named_parameters()}
    groups = param_groups(fw, train)
    mult = {names[id(p)]: (g["lr_mult"], g["last_layer"]) for g in groups for p in g["params"]}
    assert mult["student.patch_embed.proj.weight"] == (pytest.approx(0.2 * 0.9**4), False)
    assert mult["student.cls_token"] == mult["mask_token"] == (pytest.approx(0.9**4), False)
    assert mult["student.blocks.0.attn.qkv.weight"] == (pytest.approx(0.9**3), False)
    assert mult["student.blocks.2.mlp.fc2.bias"] == (pytest.approx(0.9), False)
    assert mult["student.norm.weight"] == (1.0, False)
    assert mult["head.mlp.0.weight"] == (1.0, False)
    # the head's weight-norm g (original0) and direction (original1): trained, frozen the first epoch
    assert [v for k, v in mult.items() if "last_layer" in k] == [(1.0, True), (1.0, True)]
    assert not any(k.startswith("teacher") for k in mult)
    decay = {names[id(p)]: g["wd_scale"] for g in groups for p in g["params"]}
    last_layer = "head.last_layer.parametrizations.weight.original"
    assert decay["student.pos_embed"] == decay["mask_token"] == decay[last_layer + "1"] == 1.0
    assert decay[last_layer + "0"] == 1.0  # DINOv2 decays weight_g: no "norm" in its name, not a bias
    assert decay["student.blocks.0.norm1.weight"] == decay["student.blocks.0.ls1.gamma"] == 0.0


def test_no_cpu_value_is_a_default_of_a_paper_scale_study():
    quick = _resolved(_cell("supervised", "micro", recipe="cpu"))
    assert quick["train.batch_size"] == 64 and quick["framework.crop_scale"] == (0.35, 1.0)
    problems = check({**_cell("dinov2", "micro"), "data": {"name": "procedural"}})
    assert problems == [
        "framework.recipe: recipe dinov2 has no values for model.scale 'micro'; "
        "expected small, base or large (recipe cpu for CPU-scale models)"
    ]
    assert check({**_cell("dinov2", "base", recipe="deit3"), "data": {"name": "procedural"}}) == [
        "framework.recipe: recipe 'deit3' is for supervised, deit3, not framework 'dinov2'"
    ]


def test_print_config_shows_each_value_and_its_source(tmp_path, capsys):
    config = {**_cell("dinov2", "base"), "train": {"lr": 1e-3}, "data": {"name": "procedural"}}
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(config))
    main([str(path), "--print-config"])
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert lines["train.lr"] == ["0.001", "study"]
    assert lines["train.layerwise_decay"] == ["0.9", "preset", "dinov2"]
    assert lines["train.batch_size"] == ["1024", "preset", "dinov2"]  # no reference config for ViT-B
    assert lines["train.num_workers"] == ["0", "default"]
    assert lines["framework.recipe"] == ['"dinov2"', "default"]


def test_print_config_of_one_cell_of_a_study(capsys):
    study = Path(__file__).parents[2] / "studies" / "norm_vs_qkv.yaml"
    main([str(study), "--print-config", "--cell", "model.scale=large,framework.name=deit3"])
    out = capsys.readouterr()
    lines = {line.split()[0]: line.split()[1:] for line in out.out.splitlines()}
    assert lines["model.img_size"] == ["192", "preset", "deit3"]
    assert lines["train.optimizer"] == ['"lamb"', "preset", "deit3"]
    assert lines["model.registers"] == ["4", "study"]
    assert "data: imagefolder root /datasets/imagenet: does not exist" in out.err  # shown, not fatal here


# The reference recipes' code paths (sqrt lr rule, epochs of `epoch_length` steps, layer-wise decay,
# frozen last layer, per-module clipping, a shared iBOT head; LAMB and BCE) for a few real steps,
# on a ViT shrunk below its scale so that it runs in seconds.
TINY = {"depth": 1, "embed_dim": 48, "num_heads": 2, "img_size": 32, "patch_size": 16}


@pytest.mark.parametrize(
    "framework,scale,overrides",
    [
        (
            {
                "name": "dinov2",
                "out_dim": 64,
                "hidden_dim": 32,
                "bottleneck_dim": 16,
                "n_local": 2,
                "local_size": 16,
            },
            "large",
            {"epoch_length": 1},
        ),
        ({"name": "deit3"}, "base", {}),
    ],
    ids=["dinov2", "deit3"],
)
def test_reference_recipes_train_a_few_steps(tmp_path, framework, scale, overrides):
    from model.train import pretrain

    config = {
        "seed": 0,
        "model": {"scale": scale, **TINY},
        "framework": framework,
        "data": {"name": "procedural", "num_classes": 4, "size": 16},
        "train": {"steps": 3, "batch_size": 4, **overrides},
    }
    backbone, summary = pretrain(config, tmp_path, progress=False)
    assert summary["pretrain.steps"] == 3 and math.isfinite(summary["pretrain.loss"])
    assert backbone.blocks[0].drop_path1.drop_prob == resolve(config)[0]["model"]["drop_path_rate"]


def test_ibot_masks_are_stratified_per_batch_as_dinov2_collate():
    """Of 2B global crops, int(0.5 * 2B) are masked, their ratios one per equal bin of [0.1, 0.5]
    (block masks may fall a few patches short), the rest unmasked, shuffled over the crops."""
    from model.frameworks.masking import batch_masks

    grid, n = (14, 14), 16
    edges = np.linspace(0.1, 0.5, 9)
    positions = set()
    for seed in range(5):
        masks = batch_masks(n, grid, 0.5, (0.1, 0.5), np.random.default_rng(seed))
        counts = masks.sum(-1)
        assert masks.shape == (n, 196) and (counts > 0).sum() == 8
        ratios = sorted(c / 196 for c in counts.tolist() if c)
        for r, low, high in zip(ratios, edges[:-1], edges[1:], strict=True):
            assert low - 0.05 <= r <= high, (seed, ratios)
        positions.add(tuple((counts > 0).tolist()))
    assert len(positions) > 1  # shuffled over the crops

    # in the data workers, seeded by the samples' own seeded streams (model.train: by position)
    from model.data import build_dataset, finalize

    resolved = resolve(_cell("dinov2", "large"))[0]
    fw = build_framework(
        {**TINY, "scale": "large", "img_size": 64, "patch_size": 8},
        {**resolved["framework"], "out_dim": 16, "hidden_dim": 8, "bottleneck_dim": 4, "n_local": 0},
        num_classes=None,
        total_steps=10,
    )
    data = build_dataset("procedural", "train", size=4, num_classes=4, resolution=64)

    def batch(seed: int) -> dict:
        torch.manual_seed(seed)
        return fw.train_collate()([finalize(fw.train_transform()(data.load(i))) for i in range(4)])

    first = batch(0)
    assert first["ibot_mask"].shape == (8, 64) and (first["ibot_mask"].sum(-1) > 0).sum() == 4
    assert torch.equal(batch(0)["ibot_mask"], first["ibot_mask"]) and "mask_seed" not in first


def test_dinov2_head_trains_its_weight_norm_and_the_cpu_recipe_freezes_it():
    for recipe, trained in (("dinov2", True), ("cpu", False)):
        cell = _cell("dinov2", "large" if recipe == "dinov2" else "micro", recipe=recipe)
        options = {**resolve(cell)[0]["framework"], "out_dim": 16, "hidden_dim": 8, "bottleneck_dim": 4}
        fw = build_framework({**TINY, "scale": "micro"}, options, num_classes=None, total_steps=10)
        g = fw.head.last_layer.parametrizations.weight.original0
        assert g.requires_grad == trained and torch.equal(g, torch.ones(16, 1)), recipe


def test_deit3_mixes_with_timms_mixup_and_binarises_the_targets():
    resolved = resolve(_cell("deit3", "base"))[0]
    fw = build_framework({**TINY, "scale": "base"}, resolved["framework"], num_classes=4, total_steps=10)
    images, labels = torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    state = np.random.get_state()[1].copy()
    torch.manual_seed(0)
    mixed, targets = fw.targets(images.clone(), labels)
    torch.manual_seed(0)
    again, _ = fw.targets(images.clone(), labels)
    assert torch.equal(mixed, again) and not torch.equal(mixed, images)  # seeded from torch, not numpy
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global RNG left as it was
    torch.testing.assert_close(targets.sum(-1), torch.ones(8))
    assert (targets.gt(0).sum(-1) == 2).any()  # BCE: both mixed classes are positives
    fw.train()
    assert fw({"image": images, "label": labels}, 0)["loss"].isfinite()
    with pytest.raises(ValueError, match="even batch"):
        fw.targets(images[:3], labels[:3])
    crop = fw.train_transform().transforms[0].transforms[0]
    assert crop.interpolation == InterpolationMode.BICUBIC
    smoothed = {**_cell("deit3", "base", label_smoothing=0.1), "data": {"name": "procedural"}}
    assert check(smoothed) == [
        "framework.label_smoothing: got 0.1; expected 0 with loss bce and mixup or "
        "cutmix (binarised, smoothed targets make every class a positive)"
    ]


def test_repeated_augmentation_deals_timms_sampler_across_ranks():
    """Each image 3 times in a row; rank r of W taking positions r, r + W, ... of the stream gets
    exactly what timm's RepeatAugSampler gives rank r of W (DeiT's RASampler)."""
    from timm.data.distributed_sampler import RepeatAugSampler

    from model.train import _EPOCH, _mix, _SampleStream, epoch_samples

    assert epoch_samples(1_281_167, 3) == 1_281_024 and epoch_samples(1_281_167) == 1_281_167
    stream = _SampleStream(list(range(30)), lambda s: s, seed=5, repeats=3)
    order = stream._order(1).tolist()
    assert stream.epoch_len == 30 and order[0::3] == order[1::3] == order[2::3]
    for world in (2, 3):
        for rank in range(world):
            sampler = RepeatAugSampler(range(30), num_replicas=world, rank=rank, num_repeats=3)
            sampler.set_epoch(_mix(5, _EPOCH, 1))
            assert order[rank::world] == list(sampler), (world, rank)


def test_training_key_hashes_the_resolved_config():
    from model.experiment import training_key

    quick = {
        "model": {"scale": "micro"},
        "framework": {"name": "dinov2", "recipe": "cpu"},
        "data": {"name": "procedural"},
        "train": {"steps": 5},
        "seed": 0,
    }
    spelled = {
        **quick,
        "model": {"scale": "micro", "img_size": 32, "drop_path_rate": 0.0},
        "framework": {**quick["framework"], "out_dim": 1024},
        "train": {"steps": 5, "batch_size": 64},
        "data": {"name": "procedural", "num_classes": 10},
    }
    assert training_key(spelled) == training_key(quick)  # the preset's and defaults' values spelled out
    assert training_key({**quick, "train": {"steps": 5, "batch_size": 32}}) != training_key(quick)
    third, first = (
        {**quick, "model": {"scale": "micro", "specialize": {"qkv": q}}} for q in ("first_third", 1)
    )
    assert training_key(third) == training_key(first)  # the same block of 4: one backbone, trained once
    assert training_key({**quick, "model": {"scale": "micro", "specialize": {"qkv": 2}}}) != training_key(
        first
    )
    paper = _cell("dinov2", "large")
    explicit = {**paper, "framework": {**paper["framework"], "recipe": "dinov2", "n_local": 8}}
    assert training_key(explicit) == training_key(paper)
    import model.recipes as recipes

    before = training_key(paper)
    recipes._DINOV2["framework"]["n_local"] = 6  # a preset changes: the cached backbone is not reused
    try:
        assert training_key(paper) != before
    finally:
        recipes._DINOV2["framework"]["n_local"] = 8
