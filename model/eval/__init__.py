"""Frozen-backbone evaluations (DINOv2/DINOv3 protocols) and the paper's token analysis.

Each evaluation is a typed config (parsed from ``eval.<name>`` of a study config) and a function
``(model, config, cache, progress) -> {metric: float}`` with short metric names; the trial task
(model.experiment) prefixes them as ``<eval>.<dataset>.<metric>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from timm.models.vision_transformer import VisionTransformer

from model.eval.analysis import METRICS as ANALYSIS_METRICS
from model.eval.analysis import AnalysisConfig, analysis
from model.eval.base import EvalConfig, EvalError, FeatureCache, any_size
from model.eval.classification import KNNConfig, LinearClsConfig, knn, linear_cls
from model.eval.depth import LinearDepthConfig, linear_depth
from model.eval.segmentation import LinearSegConfig, linear_seg


class Evaluation(NamedTuple):
    config: type[EvalConfig]
    run: Callable[..., dict[str, float]]


EVALS: dict[str, Evaluation] = {
    "knn": Evaluation(KNNConfig, knn),
    "linear_cls": Evaluation(LinearClsConfig, linear_cls),
    "linear_seg": Evaluation(LinearSegConfig, linear_seg),
    "linear_depth": Evaluation(LinearDepthConfig, linear_depth),
    "analysis": Evaluation(AnalysisConfig, analysis),
}


def parse_eval(
    name: str, raw: Mapping[str, Any], pretrain_data: Mapping[str, Any] | None = None
) -> EvalConfig:
    """The validated config of evaluation ``name``; EvalError names the offending key."""
    if name not in EVALS:
        raise EvalError(f"eval.{name}: unknown evaluation; expected one of {', '.join(EVALS)}")
    return EVALS[name].config.parse(raw, pretrain_data)


def run_eval(
    model: VisionTransformer, config: EvalConfig, cache: FeatureCache | None = None, progress: bool = False
) -> dict[str, float]:
    """Run one evaluation on a frozen backbone; its metrics without the ``<eval>.<dataset>`` prefix."""
    model.eval().requires_grad_(False)
    return EVALS[config.name].run(model, config, cache=cache, progress=progress)


__all__ = [
    "ANALYSIS_METRICS",
    "EVALS",
    "AnalysisConfig",
    "EvalConfig",
    "EvalError",
    "Evaluation",
    "FeatureCache",
    "KNNConfig",
    "LinearClsConfig",
    "LinearDepthConfig",
    "LinearSegConfig",
    "any_size",
    "parse_eval",
    "run_eval",
]
