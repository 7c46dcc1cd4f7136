"""The reference training recipes as named presets (``framework.recipe``), and their resolution.

A cell's ``model``, ``framework`` and ``train`` sections are its recipe's values overridden by
what the study sets; keys neither sets take the typed defaults (model.config, the framework's
Options). Values are those of ../shared/reference/recipes.md (DINOv2 @ b8931f7, DeiT-III @ 7e160fe):

- ``dinov2``: ``ssl_default_config.yaml`` (= ``vitl16_short.yaml``) for ``model.scale: large``.
  The reference has **no training config for ViT-S or ViT-B** (its released S/B models are
  distilled from ViT-g): for ``small`` and ``base`` this preset keeps the default config's values
  unchanged and a global batch of 1024, the batch the base lr is defined for (lr 4e-3 unscaled).
- ``dinov2_vitl14`` / ``dinov2_vitg14``: ``vitl14.yaml`` / ``vitg14.yaml`` (SwiGLU FFN of L/14
  not modelled: our ``large`` scale has the MLP FFN; vitg14's global batch is not stated, vitl14's
  3072 is used).
- ``deit3``: the ImageNet-1k pretraining of README_revenge.md per size (small, base, large):
  LAMB, BCE on binarised Mixup / CutMix targets, 3-Augment, 3 repeated augmentations, timm's
  cosine lr stepped per epoch, 800 epochs, batch 2048, 192 px for B and L. An epoch is
  RASampler's ``N // 256 * 256`` samples without DeiT's per-GPU drop_last (ImageNet: 625.5 steps
  of 2048, where DeiT runs 625).
- ``cpu``: the CPU-scale values the quickstart was tuned with (not a reference recipe).
- ``cpu_ssl``: a CPU-scale self-supervised recipe for the DINO family (micro ViT, 32 px, patch 8,
  800 steps ~3 min on one core). DINOv2 with it beats a random init on the procedural dataset's
  easy variant, 3 seeds: k-NN +14.2 (61.0 vs 46.8), linear-seg mIoU +3.7 (33.2 vs 29.5); every
  run behind its values is in docs/ssl-cpu-log.md. Not a reference recipe.

A config without ``framework.recipe`` takes its framework's reference recipe (dinov2 for the
DINO family, deit3 for supervised), so no CPU value is ever a silent default of a paper-scale
study; CPU-scale studies name ``recipe: cpu``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

SECTIONS = ("model", "framework", "train")
DINO_FAMILY = ("dino", "ibot", "dinov2")
SUPERVISED = ("supervised", "deit3")
OFFICIAL_EPOCH_LENGTH = 1250  # DINOv2's iterations per "epoch", whatever the dataset

_CPU: dict[str, dict[str, Any]] = {
    "model": {"img_size": 32, "patch_size": 4, "drop_path_rate": 0.0, "drop_path_subset": False},
    "train": {
        "batch_size": 64,
        "lr": 1e-3,
        "lr_scaling": "none",
        "min_lr": 1e-6,
        "warmup_lr": 0.0,
        "lr_step": "step",
        "repeated_aug": 1,
        "optimizer": "adamw",
        "weight_decay": 0.04,
        "weight_decay_end": None,
        "decay_tokens": False,
        "betas": (0.9, 0.999),
        "layerwise_decay": 1.0,
        "patch_embed_lr_mult": 1.0,
        "freeze_last_layer_epochs": 0.0,
        "clip_grad": 3.0,
        "clip_grad_per_module": False,
    },
    "dino": {
        "out_dim": 1024,
        "hidden_dim": 512,
        "bottleneck_dim": 128,
        "head_layers": 3,
        "student_temp": 0.1,
        "teacher_temp": 0.04,
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_epochs": None,
        "momentum_teacher": 0.99,
        "momentum_teacher_end": 1.0,
        "centering": "center",
        "center_momentum": 0.9,
        "n_local": 4,
        "local_size": None,
        "global_scale": (0.32, 1.0),
        "local_scale": (0.05, 0.32),
        "blur": (1.0, 0.1, 0.5),
        "interpolation": "bilinear",
        "norm_last_layer": True,
        "layerscale": None,
        "dino_weight": 1.0,
        "ibot_weight": 1.0,
        "ibot_separate_head": True,
        "mask_probability": 0.5,
        "mask_ratio": (0.1, 0.5),
        "koleo_weight": 0.1,
    },
    "supervised": {
        "loss": "bce",
        "label_smoothing": 0.0,
        "layerscale": 1e-4,
        "crop_scale": (0.35, 1.0),
        "interpolation": "bilinear",
        "jitter": 0.3,
        "mixup": 0.0,
        "cutmix": 0.0,
    },
}

# docs/ssl-cpu-log.md: greyscale views (colour is a shortcut between two crops of a small synthetic
# image), no local crops, sharp teacher, no LayerScale (it costs segmentation at this scale)
_CPU_SSL: dict[str, dict[str, Any]] = {
    "model": {"img_size": 32, "patch_size": 8, "drop_path_rate": 0.0},
    "train": {**_CPU["train"], "batch_size": 32, "lr": 2e-3, "warmup_steps": 30},
    "framework": {
        **_CPU["dino"],
        "n_local": 0,
        "teacher_temp": 0.02,
        "warmup_teacher_temp": 0.02,
        "grayscale": 1.0,
        "color_jitter": (0.4, 0.4, 0.0, 0.0),
        "color_jitter_p": 0.8,
        "solarize": 0.2,
        "layerscale": None,
    },
}

# ssl_default_config.yaml (cfg:L<n> in recipes.md §1a) and the schedules of §2
_DINOV2: dict[str, dict[str, Any]] = {
    # the student takes DINOv2's list path, whose stochastic depth is the batch-subset form at any rate
    "model": {
        "img_size": 224,
        "patch_size": 16,
        "drop_path_rate": 0.3,
        "drop_path_uniform": True,
        "drop_path_subset": True,
    },
    "framework": {
        "out_dim": 65536,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
        "head_layers": 3,
        "student_temp": 0.1,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_epochs": 30,
        "momentum_teacher": 0.992,
        "momentum_teacher_end": 1.0,
        "centering": "center",
        "center_momentum": 0.9,
        "n_local": 8,
        "local_size": 96,
        "global_scale": (0.32, 1.0),
        "local_scale": (0.05, 0.32),
        "interpolation": "bicubic",
        "norm_last_layer": False,
        "layerscale": 1e-5,
        "blur": (0.0, 0.9, 0.5),  # as DINOv2's code runs them (inverted wrapper), not 1 / 0.1 / 0.5
        "dino_weight": 1.0,
        "ibot_weight": 1.0,
        "ibot_separate_head": False,
        "mask_probability": 0.5,
        "mask_ratio": (0.1, 0.5),
        "koleo_weight": 0.1,
    },
    "train": {
        "epochs": 100,
        "epoch_length": OFFICIAL_EPOCH_LENGTH,
        "batch_size": 2048,
        "lr": 4e-3,
        "lr_scaling": "sqrt_wrt_1024",
        "warmup_epochs": 10,
        "warmup_lr": 0.0,
        "min_lr": 1e-6,
        "lr_step": "step",
        "repeated_aug": 1,
        "optimizer": "adamw",
        "betas": (0.9, 0.999),
        "weight_decay": 0.04,
        "weight_decay_end": 0.4,
        "clip_grad": 3.0,
        "clip_grad_per_module": True,
        "freeze_last_layer_epochs": 1,
        "patch_embed_lr_mult": 0.2,
        "layerwise_decay": 0.9,
        "decay_tokens": True,
    },
}
_DINOV2_L14: dict[str, dict[str, Any]] = {
    "model": {"patch_size": 14, "drop_path_rate": 0.4},
    "framework": {
        "out_dim": 131072,
        "bottleneck_dim": 384,
        "ibot_separate_head": True,
        "ibot_out_dim": 131072,
        "ibot_bottleneck_dim": 256,
        "ibot_hidden_dim": 2048,
        "centering": "sinkhorn",
        "momentum_teacher": 0.994,
        "local_size": 98,
    },
    "train": {
        "batch_size": 3072,
        "epochs": 500,
        "warmup_epochs": 80,
        "lr": 2e-4,
        "weight_decay_end": 0.2,
        "layerwise_decay": 1.0,
    },
}

# README_revenge.md, ImageNet-1k pretraining; timm's cosine scheduler (warmup from 1e-6, min 1e-5)
# stepped once an epoch; RASampler's 3 repeats; Mixup 0.8 / CutMix 1.0 (timm's Mixup, per batch)
_DEIT3: dict[str, dict[str, Any]] = {
    "framework": {
        "loss": "bce",
        "label_smoothing": 0.0,
        "layerscale": 1e-4,
        "crop_scale": (0.08, 1.0),
        "interpolation": "bicubic",
        "jitter": 0.3,
        "mixup": 0.8,
        "cutmix": 1.0,
    },
    "train": {
        "epochs": 800,
        "epoch_length": None,
        "batch_size": 2048,
        "optimizer": "lamb",
        "lr_scaling": "none",
        "warmup_epochs": 5,
        "warmup_lr": 1e-6,
        "min_lr": 1e-5,
        "lr_step": "epoch",
        "repeated_aug": 3,
        "weight_decay": 0.05,
        "weight_decay_end": None,
        "decay_tokens": False,
        "betas": (0.9, 0.999),
        "clip_grad": None,
        "clip_grad_per_module": False,
        "layerwise_decay": 1.0,
        "patch_embed_lr_mult": 1.0,
        "freeze_last_layer_epochs": 0.0,
    },
}
_DEIT3_SIZE = {
    "small": {"model": {"img_size": 224, "drop_path_rate": 0.05}, "train": {"lr": 4e-3}},
    "base": {"model": {"img_size": 192, "drop_path_rate": 0.2}, "train": {"lr": 3e-3}},
    "large": {"model": {"img_size": 192, "drop_path_rate": 0.45}, "train": {"lr": 3e-3}},
}


def _merge(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(copy.deepcopy(dict(values)))
    return out


def _cpu(framework: str, scale: str) -> dict:
    family = "dino" if framework in DINO_FAMILY else "supervised"
    return {"model": _CPU["model"], "train": _CPU["train"], "framework": _CPU[family]}


def _cpu_ssl(framework: str, scale: str) -> dict:
    return _merge(_CPU_SSL)


def _dinov2(framework: str, scale: str) -> dict:
    if scale not in ("small", "base", "large"):
        raise ValueError(
            f"recipe dinov2 has no values for model.scale {scale!r}; expected small, base or "
            "large (recipe cpu for CPU-scale models)"
        )
    batch = {"train": {"batch_size": 1024}} if scale != "large" else {}  # no reference config: see above
    return _merge(_DINOV2, batch)


def _dinov2_l14(framework: str, scale: str) -> dict:
    return _merge(_DINOV2, _DINOV2_L14)


def _deit3(framework: str, scale: str) -> dict:
    if scale not in _DEIT3_SIZE:
        raise ValueError(
            f"recipe deit3 has no values for model.scale {scale!r}; expected one of "
            f"{', '.join(_DEIT3_SIZE)} (recipe cpu for CPU-scale models)"
        )
    return _merge(
        {"model": {"patch_size": 16, "drop_path_uniform": True, "drop_path_subset": False}},
        _DEIT3,
        _DEIT3_SIZE[scale],
    )


# name -> (frameworks it applies to, values for (framework name, model scale))
RECIPES: dict[str, tuple[tuple[str, ...], Any]] = {
    "cpu": (DINO_FAMILY + SUPERVISED, _cpu),
    "cpu_ssl": (DINO_FAMILY, _cpu_ssl),
    "dinov2": (DINO_FAMILY, _dinov2),
    "dinov2_vitl14": (DINO_FAMILY, _dinov2_l14),
    "dinov2_vitg14": (DINO_FAMILY, _dinov2_l14),  # vitg14.yaml = vitl14.yaml's values, arch vit_giant2
    "deit3": (SUPERVISED, _deit3),
}


def default_recipe(framework: str) -> str:
    """The reference recipe of a framework: what a config without ``framework.recipe`` takes."""
    return "deit3" if framework in SUPERVISED else "dinov2"


def preset(config: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """(recipe name, its model / framework / train values for this config's framework and scale).
    ValueError names ``framework.recipe`` when the recipe is unknown or does not fit."""
    from model.frameworks import framework_class

    framework_cfg = config.get("framework") or {}
    framework = str(framework_cfg.get("name", "dinov2"))
    framework_class(framework)  # an unknown framework is named as such, not as a recipe mismatch
    name = framework_cfg.get("recipe") or default_recipe(framework)
    if name not in RECIPES:
        raise ValueError(f"framework.recipe: unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    frameworks, values = RECIPES[name]
    if framework not in frameworks:
        raise ValueError(
            f"framework.recipe: recipe {name!r} is for {', '.join(frameworks)}, not framework {framework!r}"
        )
    scale = str((config.get("model") or {}).get("scale", ""))
    try:
        return name, values(framework, scale)
    except ValueError as err:
        raise ValueError(f"framework.recipe: {err}") from None


def _fields(framework: str) -> set[str]:
    from model.frameworks import framework_class

    return set(framework_class(framework).Options.model_fields)


def resolve(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the config with its recipe applied under the study's values, the source of each
    ``section.key`` set: ``preset <name>`` or ``study``). ValueError on an unknown recipe."""
    name, values = preset(config)
    framework = str((config.get("framework") or {}).get("name", "dinov2"))
    values["framework"] = {k: v for k, v in values.get("framework", {}).items() if k in _fields(framework)}
    out = dict(copy.deepcopy(dict(config)))
    sources: dict[str, str] = {}
    for section in SECTIONS:
        study = config.get(section) or {}
        if not isinstance(study, Mapping):
            continue
        merged = dict(values.get(section, {}))
        sources.update({f"{section}.{k}": f"preset {name}" for k in merged})
        merged.update(study)
        sources.update({f"{section}.{k}": "study" for k in study})
        out[section] = merged
    return out, sources
