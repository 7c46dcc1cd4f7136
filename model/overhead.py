"""Parameter overhead of a study's specializations, at the study's scale and at others.

The paper quotes about +8 % parameters for its choice (norms + the first third's QKV) at ViT-B.
A CPU-scale study trains a micro ViT, whose overhead differs (its norms and QKV weigh another
share of the model), so a results table should show both. Each distinct ``model.specialize`` of
the study is built inside the first framework that uses it, on the meta device (no memory, no
compute): the backbone as trained, the percentage over its unspecialized parameters.

    python -m model.overhead studies/cpu/norm_vs_qkv.yaml --scale base
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from model.frameworks import build_framework
from model.recipes import resolve
from model.vit import ParamReport, param_report

# What a scale means when the study's own input would not fit it: the paper's ViT-*/16 at 224 px.
PAPER_INPUT = {"img_size": 224, "patch_size": 16}


def backbone_params(config: Mapping[str, Any], scale: str | None = None) -> ParamReport:
    """The parameter report of a cell's backbone, or of the same cell at ``scale`` (224 px, /16)."""
    resolved = resolve(config)[0]
    model = dict(resolved["model"])
    if scale is not None:
        model.update(scale=scale, depth=None, **PAPER_INPUT)
    with torch.device("meta"):
        framework = build_framework(model, resolved.get("framework") or {}, num_classes=1000, total_steps=1)
    return param_report(framework.backbone())


def variants(study_file: Path) -> dict[str, dict[str, Any]]:
    """``model.specialize`` label -> the config of the first cell that has it."""
    from sweeper.study import load_study

    out: dict[str, dict[str, Any]] = {}
    for cell in load_study(study_file).cells:
        out.setdefault(str(cell.labels.get("model.specialize", "-")), dict(cell.config))
    return out


def table(study_file: Path, scales: Sequence[str]) -> str:
    """A markdown table: per variant, extra parameters and % at the study's scale and each scale."""
    cells = variants(study_file)
    first = next(iter(cells.values()))
    own = f"{first['model']['scale']} ({first['model'].get('img_size', 224)} px)"
    columns = [own, *(f"{s} (224 px, /16)" for s in scales)]
    lines = [
        f"| variant ({first['framework'].get('name', 'dinov2')} backbone) | " + " | ".join(columns) + " |",
        "|---" * (1 + len(columns)) + "|",
    ]
    for label, config in cells.items():
        reports = [backbone_params(config), *(backbone_params(config, s) for s in scales)]
        lines.append(
            f"| {label} | "
            + " | ".join(
                f"+{r.extra / 1e6:.3f} M of {r.base / 1e6:.2f} M (+{_pct(r.extra_pct)} %)" for r in reports
            )
            + " |"
        )
    return "\n".join(lines)


def _pct(value: float) -> str:
    return f"{value:.2f}" if 0 < value < 1 else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="a study file with a model.specialize axis")
    parser.add_argument("--scale", action="append", default=[], help="another scale to show (repeatable)")
    args = parser.parse_args(argv)
    print(table(args.study, args.scale))


if __name__ == "__main__":
    main()
