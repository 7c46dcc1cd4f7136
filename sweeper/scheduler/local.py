"""Local execution: `parallelism` submitit local jobs ("lanes") on this machine.

Every lane gets the whole list of cells and claims them one at a time (an O_EXCL file in the
cell's run directory), so the lanes balance themselves and a launch can return at once: the
lanes are detached processes that outlive it, as SLURM jobs outlive their sbatch. Each lane
caps OpenMP threads (cpus_per_task, or its share of the cores) so lanes do not oversubscribe,
and holds each cell to its timeout_min.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import submitit

from sweeper.rundir import pid_alive
from sweeper.scheduler import Group, JobState
from sweeper.spec import LocalExecutor
from sweeper.worker import Worker

_FOREVER_MIN = 60 * 24 * 365  # submitit's local default (2 min) would stop the lanes


class LocalBackend:
    kind = "local"

    def __init__(self, executor: LocalExecutor, folder: Path):
        self.parallelism = executor.parallelism
        self.folder = folder

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        keys = [k for g in groups for k in g.keys]
        executor = submitit.AutoExecutor(folder=self.folder, cluster="local")
        executor.update_parameters(timeout_min=_FOREVER_MIN, name=name)
        lanes = min(self.parallelism, len(keys))
        # Lanes share this machine: each gets its cells' cpus_per_task, else an equal share of the cores.
        cpus = [g.resources["cpus_per_task"] for g in groups if "cpus_per_task" in g.resources]
        threads = min(cpus) if cpus else max(1, (os.cpu_count() or 1) // lanes)
        # A cell's timeout_min is its own time limit on a lane (see Worker).
        limits = {k: 60.0 * g.resources["timeout_min"] for g in groups if "timeout_min" in g.resources for k in g.keys}
        jobs = [executor.submit(Worker(task, workdir, keys, token, lane=i, threads=threads, time_limits=limits))
                for i in range(lanes)]
        for job in jobs:
            job._cancel_at_deletion = False  # the lanes outlive this process
        job_id = ",".join(job.job_id for job in jobs)
        return dict.fromkeys(keys, job_id)

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """A lane set is RUNNING while any of its controller processes lives."""
        return {j: JobState("RUNNING" if any(pid_alive(int(p)) for p in j.split(",")) else "FINISHED",
                            shared=True) for j in job_ids}

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            for pid in job_id.split(","):
                try:
                    os.kill(int(pid), signal.SIGINT)  # as submitit does: the controller then kills its tasks
                except ProcessLookupError:
                    pass

