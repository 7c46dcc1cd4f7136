"""DINO: a student and an EMA teacher, a DINO head on the CLS token, centering and sharpening of
the teacher's output, multi-crop (the teacher sees the global crops, the student all crops).

The same class carries iBOT's masked patch loss and DINOv2's KoLeo term, switched on by the
options of model.frameworks.ibot and model.frameworks.dinov2, so the three share one code path.
Option defaults are the reference DINOv2 values; CPU-size runs take the ``cpu`` recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.transforms import v2

from model.config import Strict
from model.data import MultiCrop, Sample, Transform
from model.frameworks.base import (
    Framework,
    KeepKeys,
    build_backbone,
    cosine_schedule,
    forward_masked,
    patch_tokens,
)
from model.frameworks.heads import DINOHead
from model.frameworks.losses import TeacherTargets, koleo_loss, soft_cross_entropy
from model.frameworks.masking import CollateMasks, add_mask_seed

if TYPE_CHECKING:
    from model.frameworks.ibot import IBOTOptions


class DINOOptions(Strict):
    """Defaults are the reference DINOv2 values (ssl_default_config.yaml); the CPU-scale ones are
    the ``cpu`` recipe (model.recipes)."""

    out_dim: int = Field(65536, ge=1)  # prototypes of the DINO head
    hidden_dim: int = Field(2048, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    head_layers: int = Field(3, ge=1)
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0)
    warmup_teacher_temp: float = Field(0.04, gt=0)
    warmup_teacher_temp_epochs: float | None = Field(30, ge=0)  # in train epochs (epoch_length)
    warmup_teacher_temp_steps: int | None = Field(None, ge=0)  # wins over epochs; both None: 30%
    momentum_teacher: float = Field(0.992, ge=0, le=1)  # cosine to momentum_teacher_end over the run
    momentum_teacher_end: float = Field(1.0, ge=0, le=1)
    centering: Literal["center", "sinkhorn"] = "center"  # sinkhorn: Sinkhorn-Knopp (DINOv2 L/14, g/14)
    center_momentum: float = Field(0.9, ge=0, le=1)
    n_local: int = Field(8, ge=0)
    local_size: int | None = Field(96, ge=1)  # None: half the image size (a multiple of the patch)
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    # blur probability of global crop 1, global crop 2, the locals: what DINOv2's code runs (its
    # GaussianBlur wrapper inverts the nominal 1.0 / 0.1 / 0.5; recipes.md §1a)
    blur: tuple[float, float, float] = (0.0, 0.9, 0.5)
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"  # of the random resized crops
    norm_last_layer: bool = False  # the head's weight-norm g frozen at 1 (DINO v1); DINOv2 trains it
    # colour augmentation of every crop (model.data.MultiCrop): jitter strengths (brightness,
    # contrast, saturation, hue) applied with probability color_jitter_p, then greyscale with
    # probability grayscale; solarize on the second global crop
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale: float = Field(0.2, ge=0, le=1)
    solarize: float = Field(0.2, ge=0, le=1)
    layerscale: float | None = Field(1e-5, gt=0)  # LayerScale init (timm init_values); None: none
    dino_weight: float = Field(1.0, ge=0)


class DINO(Framework):
    """Self-distillation on the CLS token (plus masked patch tokens and KoLeo when enabled)."""

    name = "dino"
    Options: ClassVar[type[Strict]] = DINOOptions

    def __init__(
        self,
        model_cfg: Mapping[str, Any],
        opts: DINOOptions,
        *,
        num_classes: int | None,
        total_steps: int,
        steps_per_epoch: float | None = None,
    ) -> None:
        super().__init__()
        self.opts = opts
        self.total_steps = total_steps
        self.ibot_weight = getattr(opts, "ibot_weight", 0.0)
        self.koleo_weight = getattr(opts, "koleo_weight", 0.0)
        # dynamic_img_size: local crops are smaller than global ones (interpolated pos. embedding)
        self.student = build_backbone(model_cfg, init_values=opts.layerscale, dynamic_img_size=True)
        dim = self.student.embed_dim
        head: dict[str, Any] = dict(
            out_dim=opts.out_dim,
            hidden_dim=opts.hidden_dim,
            bottleneck_dim=opts.bottleneck_dim,
            nlayers=opts.head_layers,
            norm_last_layer=opts.norm_last_layer,
        )
        self.head = DINOHead(dim, **head)
        self.targets = TeacherTargets(opts.out_dim, opts.centering, opts.center_momentum)
        # iBOT's own head (DINOv2 L/14, g/14), or the DINO head shared (DINOv2's default)
        separate = bool(self.ibot_weight) and getattr(opts, "ibot_separate_head", False)
        ibot = cast("IBOTOptions", opts)  # read only with an iBOT weight, which only IBOTOptions has
        if separate:
            self.ibot_head = DINOHead(
                dim,
                **{
                    **head,
                    "out_dim": ibot.ibot_out_dim or opts.out_dim,
                    "hidden_dim": ibot.ibot_hidden_dim or opts.hidden_dim,
                    "bottleneck_dim": ibot.ibot_bottleneck_dim or opts.bottleneck_dim,
                },
            )
        if self.ibot_weight:
            patch_dim = (ibot.ibot_out_dim or opts.out_dim) if separate else opts.out_dim
            self.patch_targets = TeacherTargets(patch_dim, opts.centering, opts.center_momentum)
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.teacher = copy.deepcopy(self.student)
        self.teacher_head = copy.deepcopy(self.head)
        self.teacher_ibot_head = copy.deepcopy(self.ibot_head) if separate else None
        self.teacher.requires_grad_(False)
        self.teacher_head.requires_grad_(False)
        if self.teacher_ibot_head is not None:
            self.teacher_ibot_head.requires_grad_(False)
        if opts.warmup_teacher_temp_steps is not None:
            self.teacher_temp_warmup = opts.warmup_teacher_temp_steps
        elif opts.warmup_teacher_temp_epochs is not None and steps_per_epoch:
            self.teacher_temp_warmup = round(opts.warmup_teacher_temp_epochs * steps_per_epoch)
        else:
            self.teacher_temp_warmup = int(0.3 * total_steps)

    def _pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.student, self.teacher), (self.head, self.teacher_head)]
        if self.teacher_ibot_head is not None:
            pairs.append((self.ibot_head, self.teacher_ibot_head))
        return pairs

    def train(self, mode: bool = True) -> DINO:
        super().train(mode)
        for _, teacher in self._pairs():
            teacher.eval()  # no stochastic depth or dropout in the teacher
        return self

    def train_transform(self) -> Transform:
        img, patch = self.student.patch_embed.img_size[0], self.student.patch_embed.patch_size[0]
        local = self.opts.local_size or max(patch, img // 2 // patch * patch)
        steps: list[Any] = [
            MultiCrop(
                img,
                local,
                self.opts.n_local,
                self.opts.global_scale,
                self.opts.local_scale,
                blur=self.opts.blur,
                interpolation=self.opts.interpolation,
                jitter=self.opts.color_jitter,
                jitter_p=self.opts.color_jitter_p,
                grayscale_p=self.opts.grayscale,
                solarize_p=self.opts.solarize,
            ),
            KeepKeys("image"),
        ]
        if self.ibot_weight:
            steps.append(add_mask_seed)
        return v2.Compose(steps)

    def train_collate(self) -> Callable[[list[Sample]], Sample]:
        """With iBOT: the batch's block masks, stratified over its global crops (DINOv2's collate)."""
        if not self.ibot_weight:
            return super().train_collate()
        ibot = cast("IBOTOptions", self.opts)
        return CollateMasks(self.student.patch_embed.grid_size, ibot.mask_probability, ibot.mask_ratio)

    def teacher_temp(self, step: int) -> float:
        return cosine_schedule(
            step,
            self.total_steps,
            self.opts.teacher_temp,
            self.opts.teacher_temp,
            self.teacher_temp_warmup,
            self.opts.warmup_teacher_temp,
        )

    def forward(self, batch: Sample, step: int) -> dict[str, torch.Tensor]:
        crops = batch["image"]
        globals_ = torch.cat(crops[:2])
        temp, student_temp = self.teacher_temp(step), self.opts.student_temp
        masks = batch["ibot_mask"] if self.ibot_weight else None  # 2B×N
        with torch.no_grad():
            t_tokens = self.teacher.forward_features(globals_)
            t_cls = self.targets(self.teacher_head(t_tokens[:, 0]), temp).chunk(2)
            if masks is not None:
                t_head = self.teacher_ibot_head if self.teacher_ibot_head is not None else self.teacher_head
                t_patch = t_head(patch_tokens(self.teacher, t_tokens)[masks])
                t_patch = self.patch_targets(t_patch, temp)

        if masks is not None:
            s_tokens = forward_masked(self.student, globals_, masks, self.mask_token)
        else:
            s_tokens = self.student.forward_features(globals_)
        s_cls = list(self.head(s_tokens[:, 0]).chunk(2))
        if len(crops) > 2:
            s_cls += self.head(self.student.forward_features(torch.cat(crops[2:]))[:, 0]).chunk(
                len(crops) - 2
            )
        terms = [
            soft_cross_entropy(t_cls[i], s_cls[v], student_temp).mean()
            for i in range(2)
            for v in range(len(s_cls))
            if v != i
        ]
        losses = {"dino": cast(torch.Tensor, sum(terms)) / len(terms)}
        loss = self.opts.dino_weight * losses["dino"]

        if masks is not None:
            s_head = self.ibot_head if self.teacher_ibot_head is not None else self.head
            s_patch = s_head(patch_tokens(self.student, s_tokens)[masks])
            # each image's masked tokens weigh 1 / its count; the sum is averaged over all images
            weight = (1.0 / masks.sum(-1).clamp(min=1)).unsqueeze(1).expand_as(masks)[masks]
            losses["ibot"] = (
                soft_cross_entropy(t_patch, s_patch, student_temp) * weight
            ).sum() / masks.shape[0]
            loss = loss + self.ibot_weight * losses["ibot"]
        if self.koleo_weight:
            losses["koleo"] = cast(torch.Tensor, sum(koleo_loss(c) for c in s_tokens[:, 0].chunk(2)))
            loss = loss + self.koleo_weight * losses["koleo"]
        return {"loss": loss, **losses}

    def momentum(self, step: int) -> float:
        """The teacher's EMA momentum: cosine from momentum_teacher to momentum_teacher_end."""
        opts = self.opts
        return cosine_schedule(step, self.total_steps, opts.momentum_teacher, opts.momentum_teacher_end)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA of the student into the teacher, momentum on a cosine schedule towards 1."""
        m = self.momentum(step)
        for student, teacher in self._pairs():
            t_params: list[torch.Tensor] = list(teacher.parameters())
            torch._foreach_mul_(t_params, m)
            torch._foreach_add_(t_params, [p.detach() for p in student.parameters()], alpha=1 - m)

    def backbone(self) -> VisionTransformer:
        return self.teacher
