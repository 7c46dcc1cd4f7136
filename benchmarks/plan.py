"""Plan a 10,000-cell study: validate + expand, then diff + record into a fresh SQLite store,
then re-plan once every cell is recorded. Prints seconds per phase and cells/s.

    python benchmarks/plan.py [--cells-per-axis 10] [--db URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sweeper.store import Store
from sweeper.study import load_study

STUDY = """
study: bench
task: model.experiment:run
base:
  model: {{scale: base, img_size: 224, patch_size: 16, registers: 4, specialize: {{}}}}
  framework: {{name: dinov2, koleo_weight: 0.1, ibot_weight: 1.0}}
  data: {{name: imagefolder, root: /datasets/imagenet}}
  train: {{epochs: 100, batch_size: 1024, lr: 5.0e-4, warmup_epochs: 10, weight_decay: 0.04}}
  eval:
    linear_seg: {{dataset: ade20k, root: /datasets/ADEChallengeData2016}}
    knn: {{dataset: imagefolder, root: /datasets/imagenet, k: 20}}
axes:
  model.specialize:
{variants}
  train.lr: {lrs}
  train.weight_decay: {wds}
seeds: {n}
resources:
  default: {{timeout_min: 600, gpus_per_node: 8}}
  overrides:
    - when: {{train.lr: {first_lr}}}
      set: {{timeout_min: 900}}
"""


def write_study(path: Path, n: int) -> None:
    variants = "\n".join(f"    v{i}: {{norm1: {{first: {i + 1}}}, qkv: first_third}}" for i in range(n))
    lrs = [round(1e-4 * (i + 1), 6) for i in range(n)]
    wds = [round(0.01 * (i + 1), 4) for i in range(n)]
    path.write_text(STUDY.format(variants=variants, lrs=lrs, wds=wds, n=n, first_lr=lrs[0]))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells-per-axis", type=int, default=10, help="values per axis; cells = this ** 4")
    parser.add_argument("--db", help="store URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        write_study(path, args.cells_per_axis)
        url = args.db or f"sqlite:///{Path(tmp) / 'results.db'}"
        study, t_load = timed(lambda: load_study(path))
        cells = len(study.cells)
        with Store(url) as store:
            plan, t_record = timed(lambda: store.plan(study))
            assert len(plan.added) == cells
            study2, t_load2 = timed(lambda: load_study(path))
            plan2, t_replan = timed(lambda: store.plan(study2))
            assert not plan2.added and len(plan2.kept) == cells
        print(f"cells: {cells:,}  store: {url.split(':')[0]}")
        print(
            f"first plan : validate+expand {t_load:6.3f} s + diff+record {t_record:6.3f} s"
            f" = {t_load + t_record:6.3f} s"
            f"  ({cells / (t_load + t_record):,.0f} cells/s; target < 3 s)"
        )
        print(
            f"re-plan    : validate+expand {t_load2:6.3f} s + diff        {t_replan:6.3f} s"
            f" = {t_load2 + t_replan:6.3f} s"
            f"  (target < 1 s)"
        )


if __name__ == "__main__":
    main()
