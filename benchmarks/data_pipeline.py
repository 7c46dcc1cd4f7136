"""Throughput of the data pipeline against the training speed it must feed.

Prints images/s of the procedural datasets (``procedural``, ``scenes``) at several resolutions,
raw and through the supervised and DINO multi-crop pipelines (single process), then through a
DataLoader with 2 workers, and the ratio to a tiny ViT's fwd+bwd speed on this machine: a ratio well above 1
means data cannot bottleneck training.

    python benchmarks/data_pipeline.py [--seconds 2] [--no-train]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from model.data import MultiCrop, ProceduralScenes, ProceduralShapes, supervised_train
from model.data.base import Transform

# reference/install.md: tiny ViT (32×32, patch 4, dim 192, depth 6) fwd+bwd, batch 64, 2 threads.
REFERENCE_TRAIN_IMG_S = 40.0


def items_per_s(ds: ProceduralShapes | ProceduralScenes, seconds: float) -> float:
    """Items/s of a single-process pass, timed for about ``seconds`` after one warm-up item."""
    ds[0]  # loads and caches the textures for this resolution
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        ds[n % len(ds)]
        n += 1
    return n / elapsed


def loader_per_s(ds: ProceduralShapes, batches: int, batch_size: int = 64) -> float:
    """Items/s through a 2-worker DataLoader, after the first batch (worker start-up excluded)."""
    it = iter(DataLoader(ds, batch_size=batch_size, num_workers=2, shuffle=True, persistent_workers=False))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def tiny_vit_train_per_s(steps: int = 3, batch: int = 64) -> float:
    """fwd+bwd images/s of the reference tiny ViT (timm) on this CPU."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, num_classes=10)
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per single-process row")
    parser.add_argument(
        "--no-train", action="store_true", help=f"use the reference {REFERENCE_TRAIN_IMG_S} img/s"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # single process means one core; the loader rows use the 2 workers

    def shapes(res: int, transform: Transform | None = None) -> ProceduralShapes:
        return ProceduralShapes(size=100_000, resolution=res, transform=transform)

    rows: list[tuple[str, float]] = []
    for res in (32, 64, 224):
        rows.append(
            (f"procedural {res}x{res}, raw (image+label+mask+depth)", items_per_s(shapes(res), args.seconds))
        )
    for res in (32, 64):
        rows.append(
            (
                f"scenes {res}x{res}, raw (image+label+mask)",
                items_per_s(ProceduralScenes(size=100_000, resolution=res), args.seconds),
            )
        )
    rows.append(
        (
            "scenes 32, multi-crop 2x32 (cpu_ssl: no locals)",
            items_per_s(ProceduralScenes(size=100_000, transform=MultiCrop(32, 16, 0)), args.seconds),
        )
    )
    rows.append(
        (
            "procedural 32, supervised 3-Augment -> 32",
            items_per_s(shapes(32, supervised_train(32)), args.seconds),
        )
    )
    rows.append(
        ("procedural 32, multi-crop 2x32 + 8x16", items_per_s(shapes(32, MultiCrop(32, 16, 8)), args.seconds))
    )
    rows.append(
        (
            "procedural 224, multi-crop 2x224 + 8x96",
            items_per_s(shapes(224, MultiCrop(224, 96, 8)), args.seconds),
        )
    )
    torch.set_num_threads(2)
    rows.append(("DataLoader 2 workers, procedural 32 raw, batch 64", loader_per_s(shapes(32), batches=20)))
    rows.append(
        (
            "DataLoader 2 workers, procedural 32 multi-crop, batch 64",
            loader_per_s(shapes(32, MultiCrop(32, 16, 8)), 5),
        )
    )

    train = REFERENCE_TRAIN_IMG_S if args.no_train else tiny_vit_train_per_s()
    source = "reference/install.md" if args.no_train else "measured here, 2 threads"
    print(f"{'pipeline':<60} {'img/s':>9} {'x train':>8}")
    for name, rate in rows:
        print(f"{name:<60} {rate:>9.0f} {rate / train:>8.1f}")
    print(f"{'tiny ViT fwd+bwd, 32x32, batch 64 (' + source + ')':<60} {train:>9.0f} {1:>8.1f}")
    print("x train > 1: data outpaces training. The ratio is against 32x32 training, so the 224 rows only")
    print("bound from above; a multi-crop image (2 globals + 8 quarter-size locals) costs the model ~4x a")
    print("plain one, so its rows have ~4x more headroom than shown. Loader workers share training's cores.")


if __name__ == "__main__":
    main()
