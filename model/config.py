"""Typed, strict config sections: ``model``, ``train``, ``runtime``, ``data`` (per dataset); the
framework options (model.frameworks) are built on :class:`Strict` too.

Strict because a misspelled key that fell back to its default would run the wrong ablation on
hundreds of GPUs; every problem is one line naming its key path and what was expected
(:func:`validate` collects them all, so a study's check reports each mistake once).
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from model.vit import SCALES, Spec, SpecError

__all__ = ["ConfigError", "ModelConfig", "RuntimeConfig", "Strict", "TrainConfig", "data_model", "validate"]


class ConfigError(ValueError):
    """One or more config problems; ``problems`` holds one line each (key path: what was expected)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class Strict(BaseModel):
    """Unknown keys are errors; values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _problems(err: ValidationError, cls: type[BaseModel], where: str) -> list[str]:
    out = []
    for e in err.errors():
        path = ".".join([where, *(str(p) for p in e["loc"])])
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            fields = sorted(cls.model_fields) if len(e["loc"]) == 1 else []
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            accepted = f" (accepted: {', '.join(fields)})" if fields and not close else ""
            out.append(f"{path}: unknown key{hint}{accepted}")
        elif e["type"] == "missing":
            out.append(f"{path}: missing; a value is required")
        else:
            bound = {k: v for k, v in (e.get("ctx") or {}).items() if k in _BOUNDS}
            expected = (
                " and ".join(f"{_BOUNDS[k]} {v}" for k, v in bound.items())
                if bound
                else e["msg"].removeprefix("Value error, ").removeprefix("Input should be ")
            )
            out.append(f"{path}: got {e['input']!r}; expected {expected}")
    return out


M = typing.TypeVar("M", bound=BaseModel)


def validate(cls: type[M], raw: Any, where: str) -> M:
    """``cls`` from the mapping ``raw``; ConfigError naming every bad key under ``where``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError([f"{where}: got {type(raw).__name__}; expected a mapping"])
    try:
        return cls.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(_problems(err, cls, where)) from None


class ModelConfig(Strict):
    """The backbone: a named scale (model.vit.SCALES), its input, registers and specialization."""

    scale: Literal[tuple(SCALES)]  # type: ignore[valid-type]
    img_size: int = Field(32, ge=8)
    patch_size: int = Field(4, ge=1)
    registers: int = Field(0, ge=0)
    specialize: Any = None  # model.vit.Spec: a preset name or component -> blocks
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path_uniform: bool = True  # the same rate in every block (DINOv2, DeiT-III); False: timm's ramp
    drop_path_subset: bool = False  # residuals run on a batch subset, not masked per sample (DINOv2)
    depth: int | None = Field(None, ge=1)  # overrides of the scale (small test models)
    embed_dim: int | None = Field(None, ge=1)
    num_heads: int | None = Field(None, ge=1)
    mlp_ratio: float | None = Field(None, gt=0)

    @field_validator("specialize")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        try:
            Spec.parse(value)
        except SpecError as err:
            raise ValueError(f"a valid spec ({err})") from None
        return value


class TrainConfig(Strict):
    """The ``train`` section. ``steps`` or ``epochs`` is required.

    Units: an epoch is ``epoch_length`` optimizer steps when set (DINOv2's OFFICIAL_EPOCH_LENGTH,
    1250, whatever the dataset), else one pass over the dataset (``ceil(len / batch_size)``).
    """

    steps: int | None = Field(None, ge=1)  # optimizer steps in total
    epochs: float | None = Field(None, gt=0)  # used when steps is absent
    epoch_length: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)  # global, over all DDP ranks
    lr: float = Field(1e-3, gt=0)  # base lr: peak after warmup, before lr_scaling
    lr_scaling: Literal["none", "sqrt_wrt_1024", "linear_wrt_512"] = "none"
    min_lr: float = Field(1e-6, ge=0)  # at the last step
    warmup_steps: int | None = Field(None, ge=0)  # None: warmup_epochs, else 10% of the steps
    warmup_epochs: float | None = Field(None, ge=0)
    warmup_lr: float = Field(0.0, ge=0)  # lr at step 0 (DeiT-III: 1e-6)
    lr_step: Literal["step", "epoch"] = "step"  # epoch: timm's scheduler stepped once an epoch (DeiT-III)
    repeated_aug: int = Field(1, ge=1)  # each image n times per epoch (DeiT-III: 3, timm RepeatAugSampler)
    optimizer: Literal["adamw", "lamb"] = "adamw"  # lamb: timm.optim.Lamb (clips to 1.0 inside)
    weight_decay: float = Field(0.04, ge=0)
    weight_decay_end: float | None = Field(None, ge=0)  # None: constant (DINOv2: 0.04 -> 0.4, cosine)
    decay_tokens: bool = False  # weight decay on position embedding, CLS / register / mask tokens (DINOv2)
    betas: tuple[float, float] = (0.9, 0.999)
    layerwise_decay: float = Field(1.0, gt=0, le=1)  # lr x decay^(depth + 1 - layer id) in the backbone
    patch_embed_lr_mult: float = Field(1.0, ge=0)
    freeze_last_layer_epochs: float = Field(0.0, ge=0)  # heads' last_layer at lr 0 (DINOv2: 1)
    clip_grad: float | None = Field(3.0, ge=0)  # max gradient norm; None or 0: no clipping
    clip_grad_per_module: bool = False  # True: each top-level module (backbone, heads) on its own
    checkpoint_every: int = Field(200, ge=0)  # steps; 0: only at the end and on demand
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(10, ge=1)  # steps between ctx.report calls (and the window of the mean)


class RuntimeConfig(Strict):
    """Settings that do not change results (kept out of the training key)."""

    threads: int | None = Field(None, ge=1)  # torch intra-op threads of the cell


def data_model(name: str) -> type[Strict]:
    """The typed ``data`` section of dataset ``name``: its constructor's keyword arguments."""
    from model.data import dataset_class

    cls = dataset_class(name)
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {"name": (Literal[name], ...)}
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name in ("self", "split", "transform"):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints.get(param.name, Any), default)
    return create_model(f"{cls.__name__}Config", __base__=Strict, **fields)
