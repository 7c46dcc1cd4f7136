"""What a rehearsal costs on a login node: seconds and peak RSS per scale (S/B/L) and framework.

Writes a study shaped like studies/norm_vs_qkv.yaml (224 px, patch 16, 4 registers, norms + QKV
in the first third; ImageNet, ADE20K at 512 px; dataset roots that do not exist here, so the
rehearsal writes fixtures) with DINOv2 at the reference's crops and heads (2 global + 8 local crops
of 96 px, 65536 prototypes, 2048 hidden, 256 bottleneck) and DeiT-III, and runs
`sweeper rehearse --json` on it: each unit in its own process, its peak RSS from wait4. The
seconds include each unit's evaluations (one study per framework, so both run them). With
`--processes 2`, the study's jobs run 2 processes each (slurm executor, 2 tasks per node), so that each
unit is rehearsed by 2 DDP ranks; its peak RSS is their sum.

    python benchmarks/rehearsal.py --scales small base large --frameworks dinov2 deit3 [--processes 1 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

FRAMEWORKS = {
    "dinov2": {
        "name": "dinov2",
        "n_local": 8,
        "local_size": 96,
        "out_dim": 65536,
        "hidden_dim": 2048,
        "bottleneck_dim": 256,
    },
    "deit3": {"name": "deit3"},
}


def study(scales: list[str], framework: str, processes: int) -> dict:
    jobs = {"executor": "slurm", "resources": {"default": {"tasks_per_node": processes}}}
    return (jobs if processes > 1 else {}) | {
        "study": "rehearsal_benchmark",
        "task": "model.experiment:run",
        "rehearse": "model.rehearsal:rehearsal",
        "base": {
            "model": {
                "scale": scales[0],
                "img_size": 224,
                "patch_size": 16,
                "registers": 4,
                "specialize": {
                    "norm1": "first_third",
                    "norm2": "first_third",
                    "qkv": "first_third",
                    "final_norm": True,
                },
            },
            "framework": FRAMEWORKS[framework],
            "data": {"name": "imagefolder", "root": "/nonexistent/imagenet"},
            "train": {"epochs": 100, "batch_size": 1024, "lr": 5.0e-4, "warmup_steps": 12500},
            "eval": {
                "linear_seg": {
                    "dataset": "ade20k",
                    "root": "/nonexistent/ADEChallengeData2016",
                    "img_size": 512,
                },
                "linear_cls": {"dataset": "imagefolder"},
                "knn": {"dataset": "imagefolder", "k": 20},
            },
        },
        "axes": {"model.scale": scales},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["small", "base", "large"])
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=list(FRAMEWORKS))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--processes", nargs="+", type=int, default=[1], help="processes per job (1, 2)")
    args = parser.parse_args()
    units = []
    for framework, processes in ((f, p) for f in args.frameworks for p in args.processes):  # options differ
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "study.yaml"
            path.write_text(yaml.safe_dump(study(args.scales, framework, processes), sort_keys=False))
            cli = "from sweeper.cli import app; app()"
            command = [sys.executable, "-c", cli, "rehearse", str(path), "--json", "--steps", str(args.steps)]
            proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp)
        if not proc.stdout:
            sys.exit(f"sweeper rehearse failed:\n{proc.stderr[-2000:]}")
        units += [(framework, unit) for unit in json.loads(proc.stdout)["units"]]
    table = Table(title=f"rehearsal: {args.steps} steps of batch 2 per config, then its evaluations")
    for column in ("scale", "framework", "procs", "seconds", "s/step", "peak RSS (GB)", "result"):
        table.add_column(column, justify="left" if column in ("scale", "framework", "result") else "right")
    for framework, unit in units:
        ok = "pass" if unit["ok"] else f"FAIL at {unit['stage']}: {unit['error']}"
        table.add_row(
            unit["labels"]["model.scale"],
            framework,
            str(unit["processes"]),
            f"{unit['seconds']:.0f}",
            f"{unit['figures'].get('seconds_per_step', 0):.1f}",
            f"{unit['peak_rss_mb'] / 1024:.1f}",
            ok,
        )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
