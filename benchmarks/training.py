"""Training throughput (img/s) of each framework, plain vs specialized ViT, on the CPU.

Times whole optimizer steps (forward, backward, gradient clipping, AdamW, EMA teacher) on one
pre-built batch, so the figure is the model's and not the data pipeline's (see
benchmarks/data_pipeline.py for that). Prints img/s per framework x scale x spec and the
specialized/plain ratio (1.0 = no slowdown; the FLOPs are identical by construction).

    python benchmarks/training.py --threads 2 --scales micro tiny
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import default_collate

from model.data import build_dataset, finalize
from model.frameworks import build_framework
from model.recipes import resolve


def throughput(
    framework_name: str, scale: str, spec: str, batch_size: int, img_size: int, steps: int
) -> float:
    torch.manual_seed(0)
    model = {"scale": scale, "img_size": img_size, "patch_size": 4, "specialize": spec}
    cpu = {"model": model, "framework": {"name": framework_name, "recipe": "cpu"}}
    options = resolve(cpu)[0]["framework"]
    fw = build_framework(model, options, num_classes=8, total_steps=100)
    data = build_dataset("procedural", "train", size=batch_size, num_classes=8, resolution=img_size)
    transform = fw.train_transform()
    batch = default_collate([finalize(transform(data.load(i))) for i in range(batch_size)])
    optimizer = torch.optim.AdamW([p for p in fw.parameters() if p.requires_grad], lr=1e-4)
    fw.train()

    def step(i: int) -> None:
        loss = fw(batch, i)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fw.parameters(), 3.0)
        optimizer.step()
        fw.after_step(i)

    step(0)  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(i + 1)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scales", nargs="+", default=["micro", "tiny"])
    parser.add_argument("--frameworks", nargs="+", default=["supervised", "dino", "ibot", "dinov2"])
    parser.add_argument("--specs", nargs="+", default=["norms+qkv_third", "all"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    table = Table(
        title=f"training img/s, {args.img_size}px patch 4, batch {args.batch_size}, "
        f"{args.threads} thread(s), CPU (the cpu recipe's framework options)"
    )
    for col in ("framework", "scale", "plain", *args.specs, *(f"ratio {s}" for s in args.specs)):
        table.add_column(col, justify="left" if col in ("framework", "scale") else "right")
    for scale in args.scales:
        for name in args.frameworks:
            plain = throughput(name, scale, "none", args.batch_size, args.img_size, args.steps)
            special = [
                throughput(name, scale, s, args.batch_size, args.img_size, args.steps) for s in args.specs
            ]
            table.add_row(
                name,
                scale,
                f"{plain:.1f}",
                *(f"{v:.1f}" for v in special),
                *(f"{v / plain:.3f}" for v in special),
            )
    Console().print(table)


if __name__ == "__main__":
    main()
