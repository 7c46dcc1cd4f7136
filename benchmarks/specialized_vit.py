"""Train-step time of a specialized ViT against the plain one (same scale, same input).

The models run interleaved in one process, one step at a time (the order alternates each step,
so drift and other load on the machine hit all alike); each repeat times ``--steps`` train steps
(forward, cross-entropy, backward, fused AdamW step) per model after a warm-up, and the ratio
specialized / plain of the repeat's total times is printed as min / median / max over the repeats.

``--no-optimizer`` times forward + backward only: the specialized model has more parameters, so
part of the train-step gap is AdamW updating them, which is inherent to the method.
``--per-layer`` also times the specialized model with each block on timm's own forward, where
every specialized layer splits the sequence and concatenates its two outputs (the implementation
before the streamed block), as a before/after check in the same process.

The default input is the paper's (224 px, patch 16: 197 tokens); at the 32 px of the CPU studies
(65 tokens) the fixed per-step cost of the second set of weights weighs more (README).

    python benchmarks/specialized_vit.py --scales tiny small --spec all
    python benchmarks/specialized_vit.py --img-size 32 --patch-size 4 --batch 8 --repeats 7 --steps 4
    python benchmarks/specialized_vit.py --spec norms+qkv_third --no-optimizer --per-layer
    python benchmarks/specialized_vit.py --device cuda --batch 128 --amp
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from timm.models.vision_transformer import Block
from torch import nn

from model.vit import build_vit, param_report


def _train_step(
    model: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor, amp: bool
) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    else:
        model.zero_grad(set_to_none=True)


def _time(
    model: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor, amp: bool
) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    _train_step(model, opt, x, y, amp)
    sync()
    return time.perf_counter() - start


def bench(scale: str, spec: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    kw = dict(img_size=args.img_size, patch_size=args.patch_size, num_classes=100)
    torch.manual_seed(0)
    models = {
        "plain": build_vit(scale, **kw).to(args.device),
        "special": build_vit(scale, specialize=spec, **kw).to(args.device),
    }
    if args.per_layer:
        models["per_layer"] = build_vit(scale, specialize=spec, **kw).to(args.device)
        for block in models["per_layer"].blocks:
            block.__class__ = Block  # timm's forward: each TokenSplit splits and concatenates
    opts = {
        k: None if args.no_optimizer else torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
        for k, m in models.items()
    }
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 100, (args.batch,), device=args.device)
    for _ in range(args.warmup):  # allocator, kernels, optimizer state
        for k, m in models.items():
            _time(m, opts[k], x, y, args.amp)
    names = list(models)
    totals: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(args.repeats):
        step = {k: 0.0 for k in names}
        for s in range(args.steps):
            for k in names if s % 2 == 0 else names[::-1]:
                step[k] += _time(models[k], opts[k], x, y, args.amp)
        for k in names:
            totals[k].append(step[k] / args.steps)
    out = {}
    for k in names[1:]:
        ratios = [a / b for a, b in zip(totals[k], totals["plain"], strict=True)]
        out[k] = dict(
            extra_pct=param_report(models[k]).extra_pct,
            plain_ms=1e3 * statistics.median(totals["plain"]),
            ms=1e3 * statistics.median(totals[k]),
            min=min(ratios),
            median=statistics.median(ratios),
            max=max(ratios),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", default=["tiny", "small"])
    parser.add_argument("--spec", default="all", help="spec preset(s), e.g. all, norms+qkv_third")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed train steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument(
        "--no-optimizer", action="store_true", help="time forward + backward only (no AdamW step)"
    )
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="also time the per-layer split/concatenate forward (the old one)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    )
    print(
        f"device {name}; {args.img_size}px patch {args.patch_size}, batch {args.batch}, "
        f"{args.repeats} repeats x {args.steps} steps, amp={args.amp}, spec {args.spec!r}, "
        f"{'forward+backward' if args.no_optimizer else 'train step (AdamW)'}"
    )
    print(
        f"{'scale':<7}{'model':<11}{'extra params':>13}{'plain ms':>10}{'spec ms':>10}"
        f"   ratio min / median / max"
    )
    for scale in args.scales:
        for k, r in bench(scale, args.spec, args).items():
            print(
                f"{scale:<7}{k:<11}{r['extra_pct']:>12.1f}%{r['plain_ms']:>10.1f}{r['ms']:>10.1f}"
                f"   {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
