"""In-process execution through submitit's DebugExecutor: one cell after another, in this
process, so `breakpoint()` and pdb work inside a task."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import submitit

from sweeper.run.rundir import RunDir
from sweeper.run.worker import Worker
from sweeper.scheduler.base import Group, JobState
from sweeper.states import SchedulerState


class DebugBackend:
    kind = "debug"
    inline = True

    def __init__(self, folder: Path):
        self.folder = folder

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        keys = [k for g in groups for k in g.keys]
        executor = submitit.AutoExecutor(folder=self.folder, cluster="debug")
        job_id = f"debug-{os.getpid()}"
        for i, key in enumerate(keys, 1):  # one job per cell, so that each says which cell it is
            print(
                f"debug executor: {name}: running cell {i}/{len(keys)} {key} "
                f"(its files: {RunDir.of(workdir, key).path})",
                file=sys.stderr,
                flush=True,
            )
            # runs the cell here and now; a failure is recorded in its run directory
            executor.submit(Worker(task, workdir, [key], token, capture=False)).result()
        return dict.fromkeys(keys, job_id)

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        return {j: JobState(SchedulerState.FINISHED) for j in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        """Nothing outlives the launch that ran it."""
