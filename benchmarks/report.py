"""Time `sweeper report` on a store of 10,000 cells x 3 seeds x 30 final metrics (900k metric rows).

The study: 10 named variants x 10 scales x 10 frameworks x 10 learning rates, 3 seeds; every
cell COMPLETED with 9 scores / parameter / FLOP metrics and 21 per-block analysis metrics.
The store is built with bulk inserts (not timed); then each phase of the report is timed:
load (the two queries + pivot), summarize (seed statistics, paired deltas, coverage),
render (each format), for the default metric set and for all 30 metrics.

    python benchmarks/report.py [--db sqlite:///report-bench.db]   # an existing bench store is reused
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from sweeper.report.console import print_table
from sweeper.report.load import load
from sweeper.report.options import Format
from sweeper.report.statistics import build, summarize
from sweeper.report.tables import RICH_MAX_ROWS, render, render_coverage
from sweeper.store import CellState, Store
from sweeper.study import load_study

N = 10  # labels per axis: N**4 variant combinations
SEEDS = 3
SCORES = [
    "linear_seg.ade20k.miou",
    "linear_seg.cityscapes.miou",
    "knn.imagenet.top1",
    "linear_cls.imagenet.top1",
    "linear_depth.nyu.rmse",
    "linear_depth.nyu.absrel",
]
MODEL = ["params.total", "params.extra_pct", "flops.fwd"]
ANALYSIS = [
    f"analysis.procedural.block{b}.cos_{kind}_pre_norm1"
    for b in range(7)
    for kind in ("cls_patch", "patch_patch", "cls_reg")
]
METRICS = SCORES + MODEL + ANALYSIS
assert len(METRICS) == 30

STUDY = """
study: bench
task: model.experiment:run
base:
  model: {{scale: base, specialize: {{}}}}
  framework: {{name: dinov2}}
  train: {{lr: 5.0e-4}}
axes:
  model.specialize:
{variants}
  model.scale: {scales}
  framework.name: {frameworks}
  train.lr: {lrs}
seeds: {seeds}
baseline: v0
"""


def build_store(url: str, tmp: Path) -> None:
    path = tmp / "bench.yaml"
    variants = "\n".join(["    v0: {}"] + [f"    v{i}: {{norm1: {{first: {i}}}}}" for i in range(1, N)])
    path.write_text(
        STUDY.format(
            variants=variants,
            scales=[f"s{i}" for i in range(N)],
            frameworks=[f"f{i}" for i in range(N)],
            lrs=[round(1e-4 * (i + 1), 6) for i in range(N)],
            seeds=SEEDS,
        )
    )
    study = load_study(path)
    rng = np.random.default_rng(0)
    with Store(url) as store:
        store.plan(study)
        keys = [c.key for c in study.cells]
        store.reset_cells(keys, CellState.COMPLETED)
        values = rng.normal(50, 2, size=(len(keys), len(METRICS)))
        store.add_metric_rows(
            [
                {
                    "cell_key": k,
                    "attempt": 0,
                    "stage": "eval",
                    "name": m,
                    "step": None,
                    "value": float(values[i, j]),
                }
                for i, k in enumerate(keys)
                for j, m in enumerate(METRICS)
            ]
        )


class Clock:
    """Wall and process-CPU seconds: on a shared, loaded machine CPU time is the steadier figure."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __call__(self, fn):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        return result

    def __str__(self) -> str:
        return f"{self.wall:6.3f} s wall {self.cpu:6.3f} s CPU"


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def rich_text(table) -> str:
    buf = io.StringIO()
    print_table(table, Console(file=buf, width=200, color_system=None, force_terminal=True))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--db", help="store URL; built when it has no 'bench' study (default: a fresh SQLite file)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'results.db'}"
        with Store(url) as store:
            exists = any(st.name == "bench" for st in store.studies())
        if not exists:
            _, t_build = timed(lambda: build_store(url, Path(tmp)))
            print(f"built the store in {t_build:.1f} s (not part of the report)")
        with Store(url) as store:
            members = next(st.cells for st in store.studies() if st.name == "bench")
            metric_rows = len(store.metric_values(store.study_row("bench").id))
            print(
                f"store: {url.split(':')[0]}, {members:,} cells "
                f"({N**4:,} variant combinations x {SEEDS} seeds), "
                f"{metric_rows:,} metric rows"
            )
            for title, patterns in (
                ("default metrics (9: all but analysis.*)", None),
                ("all 30 metrics (--metric '*')", ["*"]),
            ):
                load_clock, sum_clock = Clock(), Clock()
                loaded = load_clock(lambda patterns=patterns: load(store, "bench", patterns, analysis=False))
                summary = sum_clock(lambda loaded=loaded: summarize(loaded))
                print(f"\n{title}: {len(summary.cells):,} table cells, {len(summary.coverage):,} groups")
                print(f"  load (queries + pivot) {load_clock}")
                print(f"  summarize              {sum_clock}")
                for fmt in (
                    f for f in Format if f != Format.html
                ):  # html: a page from the store, not a table
                    clock = Clock()
                    # rich: as in a terminal
                    text = clock(lambda summary=summary, fmt=fmt: render(summary, fmt, RICH_MAX_ROWS))
                    if fmt == Format.rich:
                        clock(lambda text=text: rich_text(text))
                    print(
                        f"  render {fmt:<9}       {clock}   -> report total "
                        f"{load_clock.wall + sum_clock.wall + clock.wall:6.3f} s wall"
                        f" {load_clock.cpu + sum_clock.cpu + clock.cpu:6.3f} s CPU (target < 1 s)"
                    )
            clock = Clock()
            summary = clock(lambda: build(store, "bench"))
            clock(lambda: rich_text(render_coverage(summary, Format.rich, RICH_MAX_ROWS)))
            print(f"\n`sweeper report bench --coverage` (rich): {clock}")


if __name__ == "__main__":
    main()
