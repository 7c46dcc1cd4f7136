"""Side by side on one SLURM (the sandbox): 50 tasks of 1 s with Hydra's submitit launcher, then
with sweeper (one cell per array task, then cells_per_job 5), and a second run of each.

Hydra must be importable by a separate interpreter (never in sweeper's venv):

    python3 -m venv /tmp/hydra-venv && /tmp/hydra-venv/bin/pip install hydra-core hydra-submitit-launcher
    python benchmarks/hydra_compare.py --hydra-python /tmp/hydra-venv/bin/python [--repeats 2]

Run it from the repository root with SLURM_CONF set (eval "$(scripts/slurm-sandbox.sh env)").
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orchestrator import SWEEPER, study_file  # noqa: E402

APP = textwrap.dedent("""
    import time
    import hydra

    @hydra.main(version_base=None, config_path=None, config_name=None)
    def main(cfg):
        time.sleep(1.0)
        return {"score": cfg.x * 2}

    if __name__ == "__main__":
        main()
""")
# The sweeper study's job shape: 1 CPU, a 10-minute limit, 50 at once (memory is not what limits
# the sandbox: its 2 cores run two such jobs at a time either way).
HYDRA_ARGS = [
    "--multirun",
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.array_parallelism=50",
    "+x=range(0,50)",
]


def timed(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hydra-python", required=True)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    assert os.environ.get("SLURM_CONF"), "set SLURM_CONF (scripts/slurm-sandbox.sh env)"
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
            folder = Path(tmp)
            (folder / "app.py").write_text(APP)
            hydra = [timed([args.hydra_python, "app.py", *HYDRA_ARGS], folder) for _ in range(2)]
            figures = {}
            for per_job in (1, 5):
                executor = (
                    f"{{kind: slurm, array_parallelism: 50, signal_delay_s: 30, cells_per_job: {per_job}}}"
                )
                path = study_file(folder, f"side{per_job}", 50, executor, sleep=1.0)
                figures[per_job] = [
                    timed([SWEEPER, "launch", str(path), "--wait", "--json"], folder),
                    timed([SWEEPER, "launch", str(path), "--json"], folder),
                ]
        print(
            f"run {repeat + 1}: 50 x 1 s on one SLURM: Hydra + submitit launcher {hydra[0]:.1f} s, "
            f"again {hydra[1]:.1f} s (re-runs all 50); sweeper {figures[1][0]:.1f} s with one cell per array "
            f"task, {figures[5][0]:.1f} s with cells_per_job 5; relaunch {figures[1][1]:.1f} s / "
            f"{figures[5][1]:.1f} s (submits nothing)"
        )


if __name__ == "__main__":
    main()
