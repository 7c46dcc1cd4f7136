"""Train-step time of a specialized ViT against the plain one (same scale, same input).

The two models run interleaved in one process (the order alternates each repeat, so drift and
other load on the machine hit both alike); each repeat times ``--steps`` train steps (forward,
cross-entropy, backward, AdamW step) per model after a warm-up, and the ratio
specialized / plain is printed as min / median / max over the repeats.

    python benchmarks/specialized_vit.py --scales tiny small --spec all
    python benchmarks/specialized_vit.py --device cuda --img-size 224 --patch-size 16 --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from model.vit import build_vit, param_report


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                amp: bool) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _time(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          steps: int, amp: bool) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        _train_step(model, opt, x, y, amp)
    sync()
    return (time.perf_counter() - start) / steps


def bench(scale: str, spec: str, args: argparse.Namespace) -> dict[str, float]:
    kw = dict(img_size=args.img_size, patch_size=args.patch_size, num_classes=100)
    torch.manual_seed(0)
    plain = build_vit(scale, **kw).to(args.device)
    special = build_vit(scale, specialize=spec, **kw).to(args.device)
    models = {"plain": plain, "special": special}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 100, (args.batch,), device=args.device)
    for k, m in models.items():  # warm-up: allocator, kernels, optimizer state
        _time(m, opts[k], x, y, args.warmup, args.amp)
    ratios, times = [], {k: [] for k in models}
    for r in range(args.repeats):
        order = ["plain", "special"] if r % 2 == 0 else ["special", "plain"]
        for k in order:
            times[k].append(_time(models[k], opts[k], x, y, args.steps, args.amp))
        ratios.append(times["special"][-1] / times["plain"][-1])
    return dict(extra_pct=param_report(special).extra_pct,
                plain_ms=1e3 * statistics.median(times["plain"]),
                special_ms=1e3 * statistics.median(times["special"]),
                min=min(ratios), median=statistics.median(ratios), max=max(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", nargs="+", default=["tiny", "small"])
    parser.add_argument("--spec", default="all", help="spec preset(s), e.g. all, norms+qkv_third")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    print(f"device {name}; {args.img_size}px patch {args.patch_size}, batch {args.batch}, "
          f"{args.repeats} repeats x {args.steps} steps, amp={args.amp}, spec {args.spec!r}")
    print(f"{'scale':<7}{'extra params':>14}{'plain ms':>10}{'spec ms':>10}   ratio min / median / max")
    for scale in args.scales:
        r = bench(scale, args.spec, args)
        print(f"{scale:<7}{r['extra_pct']:>13.1f}%{r['plain_ms']:>10.1f}{r['special_ms']:>10.1f}"
              f"   {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f}", flush=True)


if __name__ == "__main__":
    main()
