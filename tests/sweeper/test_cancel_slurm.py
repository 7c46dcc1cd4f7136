"""`sweeper cancel --only` on a real SLURM (scripts/slurm-sandbox.sh): a pack's other cells go on.

Skipped without SLURM_CONF, except under CI=true, where it fails: CI brings the sandbox up.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from sweeper.launch import cancel, launch
from sweeper.run.rundir import RunDir, read_json
from sweeper.store import CellState, Store
from tests.sweeper.orchestration import runs_per_cell, wait_done, wait_for, write

if not (os.environ.get("SLURM_CONF") and shutil.which("sbatch")):
    if os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but SLURM is unavailable (scripts/slurm-sandbox.sh up; eval its env)", pytrace=False
        )
    pytest.skip(
        'no SLURM (bash scripts/slurm-sandbox.sh up && eval "$(bash scripts/slurm-sandbox.sh env)")',
        allow_module_level=True,
    )

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]


def test_cancel_only_stops_one_cell_of_a_pack_and_the_job_runs_the_others(env):
    """Three cells packed in one array task: cancelling the running one must not scancel the job."""
    log = env / "runs.log"
    study = write(
        env / "pack.yaml",
        "steps",
        {"steps": 40, "dt": 0.05, "every": 1000, "log": str(log)},
        "+variant: [a, b, c]",
        executor="{kind: slurm, cells_per_job: 3}",
        extra="resources: {default: {timeout_min: 2, cpus_per_task: 1}}",
    )
    first = study.cells[0].key
    with Store() as store:
        launch(store, study)
        wait_for(
            lambda: (RunDir.of("runs", first).last_report() or {}).get("step", 0) >= 5,
            timeout=120,
            what="the pack's first cell running",
        )
        assert cancel(store, study, only=["variant=a"]) == [first]
        statuses = wait_done(store, study, timeout=180)
        assert {s.key: s.state for s in statuses} == {
            c.key: CellState.CANCELLED if c.key == first else CellState.COMPLETED for c in study.cells
        }
    assert runs_per_cell(log) == Counter({c.key: 1 for c in study.cells})
    status = read_json(RunDir.of("runs", first).status)
    assert (status["state"], status["checkpointed"]) == ("CANCELLED", True)
