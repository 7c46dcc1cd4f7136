"""Orchestrator figures: ingestion of 10,000 finished cells; with a SLURM (the sandbox), the
controller's cost to submit 1,000 and 10,000 cells (sbatch calls, seconds) and the end-to-end
time of a 50-cell study of 1-second tasks, its relaunch, and a controller killed after sbatch.

    python benchmarks/orchestrator.py [--skip-slurm] [--cells-per-job 5]

The run directories go to $TMPDIR: with TMPDIR=/dev/shm the ingest figure measures the code, not
the disk (on a shared VM disk the same ingest varies 5-20 s, most of it in the kernel).

Run it from the repository root (the study's task, tests.sweeper.tasks:echo, must import).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")

from sweeper.ingest import ingest  # noqa: E402
from sweeper.launch import launch  # noqa: E402
from sweeper.run.rundir import RunDir, write_json  # noqa: E402
from sweeper.run.status import Status  # noqa: E402
from sweeper.store import CellState, Store  # noqa: E402
from sweeper.study import load_study  # noqa: E402

SWEEPER = str(Path(sys.executable).parent / "sweeper")


def study_file(folder: Path, name: str, n: int, executor: str, sleep: float = 0.0) -> Path:
    """A study of n echo cells; its name is in the config, so two studies never share cells."""
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(f"""
        study: {name}
        task: tests.sweeper.tasks:echo
        base: {{x: 0, sleep: {sleep}, name: {name}}}
        axes:
          x: {list(range(n))}
        executor: {executor}
        resources: {{default: {{timeout_min: 10, cpus_per_task: 1}}}}
    """)
    )
    return path


def bench_ingest(folder: Path, n: int = 10_000, metrics: int = 30) -> None:
    study = load_study(study_file(folder, "ingest", n, "{kind: local}"))
    with Store(f"sqlite:///{folder / 'ingest.db'}") as store:
        store.plan(study)
        cells = [{"key": c.key, "run_dir": str(RunDir.of(study.workdir, c.key).path)} for c in study.cells]
        token = "bench"
        store.claim(cells, from_states={CellState.PLANNED}, token=token, executor="local")
        dead = str(2**22 + 17)  # no such process: the lanes are gone, as after a finished study
        store.update_attempts(
            [
                {"id": a.id, "cell_key": a.cell_key, "state": CellState.PENDING, "job_id": dead}
                for a in store.attempts_of(token)
            ]
        )
        for c in study.cells:
            run = RunDir.of(study.workdir, c.key)
            Status(state=CellState.COMPLETED, token=token, host="node", pid=1, started=0, ended=1).write(
                run.status
            )
            write_json(run.result, {f"m{i}": float(i) for i in range(metrics)})
        t, cpu = time.perf_counter(), time.process_time()
        statuses = ingest(store, study)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert all(s.state == CellState.COMPLETED for s in statuses)
    # CPU seconds too: on a loaded machine the wall time also waits for the disk (a rename per cell).
    print(
        f"ingest {n:,} finished cells ({metrics} metrics each): {seconds:.2f} s, {cpu:.2f} s CPU "
        f"({n / seconds:,.0f} cells/s; target < 5 s)"
    )


def bench_submit(folder: Path, n: int) -> None:
    name = f"submit{n}"
    study = load_study(study_file(folder, name, n, "{kind: slurm, array_parallelism: 2}"))
    with Store(f"sqlite:///{folder / f'{name}.db'}") as store:
        t = time.perf_counter()
        submission, _ = launch(store, study)
        seconds = time.perf_counter() - t
        arrays = sorted({a.job_id.split("_")[0] for a in store.attempts_of(submission.token)})
    deadline = time.time() + 120  # a busy controller may refuse some cancels: insist
    while time.time() < deadline:
        subprocess.run(["scancel", *arrays], capture_output=True, check=False)
        if not subprocess.run(
            ["squeue", "-h", "-j", ",".join(arrays)], capture_output=True, text=True
        ).stdout.strip():
            break
        time.sleep(2)
    print(
        f"submit {n:,} cells: {seconds:.2f} s, {len(arrays)} sbatch calls "
        f"(arrays split at MaxArraySize), {len(submission.keys):,} cells"
    )


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, proc


def bench_end_to_end(folder: Path, cells_per_job: int) -> None:
    executor = f"{{kind: slurm, array_parallelism: 50, signal_delay_s: 30, cells_per_job: {cells_per_job}}}"
    path = study_file(folder, "e2e", 50, executor, sleep=1.0)
    first, proc = timed([SWEEPER, "launch", str(path), "--wait", "--json"], folder)
    assert proc.returncode == 0, proc.stderr
    again, proc = timed([SWEEPER, "launch", str(path), "--json"], folder)
    assert '"submitted": []' in proc.stdout, proc.stdout
    print(
        f"50 cells x 1 s on the sandbox (cells_per_job={cells_per_job}): first run {first:.1f} s "
        f"(Hydra + submitit launcher, side by side on the sandbox: 52-65 s, as sweeper with one cell per "
        f"array task; see hydra_compare.py); relaunch {again:.1f} s, submits nothing (Hydra re-runs all 50)"
    )
    killed_path = study_file(folder, "e2ekill", 50, executor, sleep=1.0)
    _, proc = timed(
        [SWEEPER, "launch", str(killed_path)], folder, env=os.environ | {"SWEEPER_FAULT": "after-submit"}
    )
    assert proc.returncode == -9, proc.returncode
    t = time.perf_counter()
    study = load_study(killed_path)
    with Store(f"sqlite:///{folder / 'results.db'}") as store:
        while True:
            statuses = ingest(store, study)
            if all(s.state == CellState.COMPLETED for s in statuses) or time.perf_counter() - t > 300:
                break
            time.sleep(1)
        relaunch, _ = launch(store, study)
    done = sum(s.state == CellState.COMPLETED for s in statuses)
    print(
        f"controller kill -9 right after sbatch: the running arrays were collected ({done}/50 completed, "
        f"{len(relaunch.keys)} resubmitted by a relaunch; Hydra orphans the results and re-runs all)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-slurm", action="store_true")
    parser.add_argument("--cells-per-job", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        bench_ingest(folder)
        if args.skip_slurm or not os.environ.get("SLURM_CONF"):
            print("(skipped the SLURM figures: --skip-slurm, or no SLURM_CONF; see scripts/slurm-sandbox.sh)")
            return
        bench_submit(folder, 1_000)
        bench_submit(folder, 10_000)
        bench_end_to_end(folder, args.cells_per_job)


if __name__ == "__main__":
    main()
