"""The search controller's cost per step on a store that already holds many trials.

A study of G groups x T completed trials (cells, search rows and final metrics written
straight into a SQLite store, as a finished search leaves them) with one trial of budget left
per group, then the pieces of one `--wait` poll, timed: giving the study its cells (attach),
ingest, recording the plan, and the step that rebuilds optuna studies and asks `parallel`
trials (grow); then the report's per-group results.

    python benchmarks/search.py [--groups 10 100] [--trials 100] [--sampler tpe] [--parallel 8]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sweeper.ingest import ingest  # noqa: E402
from sweeper.search import grow, results  # noqa: E402
from sweeper.store import CellState, Store  # noqa: E402
from sweeper.study import SEED_AXIS, TRIAL_LABEL, cell_key, parse_study, set_path  # noqa: E402


def study_text(groups: int, trials: int, sampler: str, parallel: int) -> str:
    return textwrap.dedent(f"""
        study: bench
        task: tests.sweeper.tasks:bowl
        base: {{x: 0.0, y: 0.0, lr: 0.1, group: 0}}
        axes:
          group: {list(range(groups))}
        executor: {{kind: local}}
        search:
          metric: f
          direction: minimize
          trials: {trials + 1}
          sampler: {sampler}
          parallel: {parallel}
          space:
            x: {{type: float, low: -3, high: 3}}
            y: {{type: float, low: -3, high: 3}}
            lr: {{type: float, low: 1.0e-6, high: 1.0, log: true}}
    """)


def populate(store: Store, study, trials: int) -> None:
    """T completed trials per group, as the controller would have recorded and ingested them."""
    rng = random.Random(0)
    plan = study.search
    store.plan(study)
    cells, rows, metrics = [], [], []
    for group_key, labels in plan.groups.items():
        template = plan.template({**labels, SEED_AXIS: 0})
        for number in range(trials):
            params = {"x": rng.uniform(-3, 3), "y": rng.uniform(-3, 3), "lr": 10 ** rng.uniform(-6, 0)}
            config = template.config
            for path, value in params.items():
                config = set_path(config, (path,), value)
            key = cell_key(study.task, config)
            cells.append(
                {"key": key, "task": study.task, "config": config, "seed": 0, "state": CellState.COMPLETED}
            )
            rows.append(
                {
                    "group_key": group_key,
                    "kind": "trial",
                    "number": number,
                    "cell_key": key,
                    "labels": {**template.labels, TRIAL_LABEL: number},
                    "params": params,
                    "system_attrs": {},
                }
            )
            f = (params["x"] - 0.7) ** 2 + (params["y"] + 1.2) ** 2 + (math.log10(params["lr"]) + 3) ** 2
            metrics.append(
                {"cell_key": key, "attempt": 0, "stage": "final", "name": "f", "step": None, "value": f}
            )
    with store.search_step(study.name) as step:
        step.record(cells, rows)
    store.add_metric_rows(metrics)


def timed(label: str, fn) -> object:
    start = time.perf_counter()
    value = fn()
    print(f"  {label:<34}{time.perf_counter() - start:8.3f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--trials", type=int, default=100, help="completed trials per group")
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    import optuna  # noqa: F401 - its import (~0.3 s, once per command) is not a per-step cost

    for groups in args.groups:
        bench(groups, args)


def bench(groups: int, args: argparse.Namespace) -> None:
    """One poll's steps, timed, over a fresh store of `groups` groups."""
    with tempfile.TemporaryDirectory() as folder:
        study = parse_study(study_text(groups, args.trials, args.sampler, args.parallel), "bench.yaml")
        study.workdir = str(Path(folder) / "runs")
        print(
            f"{groups} groups x {args.trials} completed trials = {groups * args.trials:,} cells, "
            f"{args.sampler}, {args.parallel} in flight"
        )
        with Store(f"sqlite:///{folder}/bench.db") as store:
            populate(store, study, args.trials)
            total = time.perf_counter()
            timed("attach (the study's cells)", lambda: store.attach(study))
            timed("ingest", lambda: ingest(store, study))
            timed("plan (record)", lambda: store.plan(study))
            growth = timed(f"grow (rebuild, ask {args.parallel})", lambda: grow(store, study))
            timed("plan (record the new trials)", lambda: store.plan(study))
            print(
                f"  {'one poll, in all':<34}{time.perf_counter() - total:8.3f} s  ({len(growth.asked)} asked)"
            )
            timed("results (report)", lambda: results(store, study))


if __name__ == "__main__":
    main()
