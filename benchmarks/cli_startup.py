"""How long each `sweeper` command takes from the shell, start-up included (a new process each run).

Commands: `--help`; `status` and `plan` of a small study (4 cells, task tests.sweeper.tasks:echo,
no `check:` hook: a study's check imports its task's code, e.g. torch, which is the task's cost,
not the CLI's); `report` over the 10,000 cells x 3 seeds x 30 metrics store of
benchmarks/report.py, as a terminal shows it (50 rows; a pipe or a file gets all 10,000 groups).
Prints the median and the best wall time of N runs, and the median CPU time (the child's user +
system, its own children included), the steadier figure on a loaded machine. Then what `report`
pays before any statistics: each import in a fresh process, and its two store reads.

    python benchmarks/cli_startup.py [--repeat 5] [--code DIR] [--report-db URL]

--code runs another checkout's sweeper (e.g. the main branch) against the same stores, for a before
and after; --report-db reuses a store that benchmarks/report.py built (building one takes a minute).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = """study: small
task: tests.sweeper.tasks:echo
base: {x: 1}
axes:
  x: [1, 2]
seeds: 2
executor: {kind: local}
"""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_runs(code: Path, args: list[str], cwd: Path, repeat: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each run; on a loaded machine the CPU seconds are the steadier figure.
    Output goes to a pipe that rich treats as a 200-column terminal (the report shows 50 rows)."""
    env = os.environ | {
        "PYTHONPATH": f"{code}{os.pathsep}{ROOT}",
        "SWEEPER_DB": str(cwd / "results.db"),
        "TTY_COMPATIBLE": "1",
        "COLUMNS": "200",
    }
    command = [sys.executable, "-c", "from sweeper.cli import app; app()", *args]
    times = []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        times.append((time.perf_counter() - start, _children_cpu() - cpu))
        if done.returncode != 0:
            raise SystemExit(f"sweeper {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose sweeper runs")
    parser.add_argument("--report-db", help="a store with benchmarks/report.py's 'bench' study")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "small.yaml").write_text(SMALL)
        report_db = args.report_db
        if report_db is None:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from report import build_store  # noqa: PLC0415 - the report benchmark's store, built here

            report_db = f"sqlite:///{tmp / 'report.db'}"
            build_store(report_db, tmp)
        timed_runs(args.code, ["plan", "small.yaml"], tmp, 1)  # record it: status reads the store
        commands = {
            "--help": ["--help"],
            "status (4 cells)": ["status", "small"],
            "plan (4 cells, no check)": ["plan", "small.yaml"],
            "report (10,000 cells x 3 seeds x 30 metrics)": ["--db", report_db, "report", "bench"],
        }
        print(f"sweeper at {args.code}, {args.repeat} runs each: wall median and best, CPU median")
        for label, command in commands.items():
            runs = timed_runs(args.code, command, tmp, args.repeat)
            wall, cpu = [w for w, _ in runs], [c for _, c in runs]
            print(
                f"  {label:<48}{statistics.median(wall):6.2f} s {min(wall):6.2f} s  "
                f"CPU {statistics.median(cpu):5.2f} s"
            )
        print_floor(args.code, report_db, args.repeat)


def print_floor(code: Path, report_db: str, repeat: int) -> None:
    """What `report` pays before any statistics: its imports (each in a fresh process, after the
    interpreter's own start) and its two store reads of the 10,000-cell study (in this process)."""
    env = os.environ | {"PYTHONPATH": f"{code}{os.pathsep}{ROOT}"}
    print("report's floor (medians): imports in a fresh process, and the store reads it makes")
    for module in ("sweeper.cli", "sweeper.store", "pandas", "scipy.special"):
        probe = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
        runs = [
            float(
                subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
            )
            for _ in range(repeat)
        ]
        print(f"  import {module:<42}{statistics.median(runs):6.2f} s")
    sys.path.insert(0, str(code))
    from sweeper.store import Store  # noqa: PLC0415 - --code's, unless building the store imported one

    with Store(report_db) as store:
        study_id = store.study_row("bench").id
        for label, read in (
            ("members (30,000 cells)", lambda: store.members(study_id)),
            (
                "final metrics but analysis.* (270,000 rows)",
                lambda: store.metric_values(study_id, analysis=False),
            ),
        ):
            runs = []
            for _ in range(repeat):
                start = time.perf_counter()
                read()
                runs.append(time.perf_counter() - start)
            print(f"  read {label:<44}{statistics.median(runs):6.2f} s")


if __name__ == "__main__":
    main()
