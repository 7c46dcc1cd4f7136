"""Time `sweeper plot --x step` on 1,000 cells x 1,000 steps (1M reported values).

The study: 10 variants x 10 scales x 10 seeds, every cell reporting pretrain.loss at steps
0..999; a tenth of the cells were resumed at step 500 (a second attempt redoing 500..999,
so the store holds 1.05M rows and superseding has work to do). The store is built with bulk
inserts (not timed); then load (query + supersede), aggregate (align + mean / band per hue
and panel) and draw + save a PNG are timed.

    python benchmarks/curves.py [--db sqlite:///curves-bench.db]   # an existing bench store is reused
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from sweeper.report.curves import aligned, band, load_curves
from sweeper.report.options import ErrorBar
from sweeper.report.plot import curve_figure, save
from sweeper.store import CellState, Store
from sweeper.study import load_study

N, SEEDS, STEPS = 10, 10, 1000
STUDY = """
study: curves
task: model.experiment:run
base: {{model: {{scale: base, specialize: {{}}}}}}
axes:
  model.specialize: {variants}
  model.scale: {scales}
seeds: {seeds}
"""


def build_store(url: str, tmp: Path) -> None:
    path = tmp / "curves.yaml"
    path.write_text(
        STUDY.format(variants=[f"v{i}" for i in range(N)], scales=[f"s{i}" for i in range(N)], seeds=SEEDS)
    )
    study = load_study(path)
    rng = np.random.default_rng(0)
    steps = np.arange(STEPS)
    with Store(url) as store:
        store.plan(study)
        store.reset_cells([c.key for c in study.cells], CellState.COMPLETED)
        for i, cell in enumerate(study.cells):
            curve = 3.0 * np.exp(-steps / 300) + rng.normal(0, 0.05, STEPS) + 0.01 * (i % N)
            rows = [
                {
                    "cell_key": cell.key,
                    "attempt": 1,
                    "stage": "report",
                    "name": "pretrain.loss",
                    "step": int(t),
                    "value": float(v),
                }
                for t, v in zip(steps, curve, strict=True)
            ]
            if i % 10 == 0:  # resumed at 500
                rows += [{**r, "attempt": 2, "value": r["value"] + 0.01} for r in rows[500:]]
            store.add_metric_rows(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/curves-bench.db"
        with Store(url) as store:
            built = any(st.name == "curves" for st in store.studies())
        if not built:
            t = time.perf_counter()
            build_store(url, Path(tmp))
            print(f"built store: {time.perf_counter() - t:.1f} s")
        with Store(url) as store:
            t0 = time.perf_counter()
            frame, _ = load_curves(store, "curves", ["pretrain.loss"])
            t1 = time.perf_counter()
            data = aligned(frame, ["model.scale", "model.specialize"])
            data = data.assign(err=band(data, ci=False))
            t2 = time.perf_counter()
            fig = curve_figure(
                data, "pretrain.loss", "model.specialize", "model.scale", ErrorBar.std, title="curves"
            )
            save(fig, Path(tmp) / "curves.png")
            t3 = time.perf_counter()
        cells = frame["key"].nunique()
        print(f"{cells} cells, {len(frame):,} values after superseding resumed attempts")
        print(
            f"load {t1 - t0:.2f} s, aggregate {t2 - t1:.2f} s, draw + save PNG (10 panels x 10 curves) "
            f"{t3 - t2:.2f} s; total {t3 - t0:.2f} s"
        )


if __name__ == "__main__":
    main()
