"""Local execution: `parallelism` submitit local jobs ("lanes") on this machine.

Every lane gets the whole list of cells and claims them one at a time (an O_EXCL file in the
cell's run directory), so the lanes balance themselves and a launch can return at once: the
lanes are detached processes that outlive it, as SLURM jobs outlive their sbatch: their
controllers run in a session of their own, so a Ctrl-C or a closed terminal that stops
`launch --wait` does not reach them. Each lane caps OpenMP threads (cpus_per_task, or its share
of the cores) so lanes do not oversubscribe, and holds each cell to its timeout_min.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import submitit
from submitit.local.local import LocalJob

from sweeper.run.rundir import pid_alive
from sweeper.run.worker import Worker
from sweeper.scheduler.base import Group, JobState
from sweeper.states import SchedulerState
from sweeper.study import LocalExecutor

_FOREVER_MIN = 60 * 24 * 365  # submitit's local default (2 min) would stop the lanes


class LocalBackend:
    kind = "local"
    inline = False

    def __init__(self, executor: LocalExecutor, folder: Path):
        self.parallelism = executor.parallelism
        self.folder = folder

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        keys = [k for g in groups for k in g.keys]
        executor = _DetachedExecutor(folder=self.folder)
        executor.update_parameters(timeout_min=_FOREVER_MIN, name=name)
        lanes = min(self.parallelism, len(keys))
        # Lanes share this machine: each gets its cells' cpus_per_task, else an equal share of the cores.
        cpus = [g.resources["cpus_per_task"] for g in groups if "cpus_per_task" in g.resources]
        threads = min(cpus) if cpus else max(1, (os.cpu_count() or 1) // lanes)
        # A cell's timeout_min is its own time limit on a lane (see Worker).
        limits = {
            k: 60.0 * g.resources["timeout_min"]
            for g in groups
            if "timeout_min" in g.resources
            for k in g.keys
        }
        jobs = [
            executor.submit(
                Worker(task, workdir, keys, token, lane=i, threads=threads, time_limits=limits)
            ).cancel_at_deletion(False)  # the lanes outlive this process
            for i in range(lanes)
        ]
        job_id = ",".join(job.job_id for job in jobs)
        return dict.fromkeys(keys, job_id)

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """A lane set is RUNNING while any of its controller processes lives."""
        return {
            j: JobState(
                SchedulerState.RUNNING
                if any(pid_alive(int(p)) for p in j.split(","))
                else SchedulerState.FINISHED,
                shared=True,
            )
            for j in job_ids
        }

    def cancel(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            for pid in job_id.split(","):
                try:
                    os.kill(int(pid), signal.SIGINT)  # as submitit does: the controller then kills its tasks
                except ProcessLookupError:
                    pass


class _DetachedExecutor(submitit.LocalExecutor):
    """submitit's local executor, its job controllers started in a new session with their output in
    the job folder. submitit starts them in the launching command's process group and terminal, where
    a Ctrl-C or a hang-up reaches them too, and they kill their tasks (the lanes) on it."""

    def _submit_command(self, command: str) -> LocalJob:
        # As submitit.local.local.start_controller does for one task, no GPU and no setup commands.
        env = os.environ | {
            "SUBMITIT_LOCAL_NTASKS": "1",
            "SUBMITIT_LOCAL_COMMAND": command,
            "SUBMITIT_LOCAL_TIMEOUT_S": str(int(60 * self.parameters["timeout_min"])),
            "SUBMITIT_LOCAL_SIGNAL_DELAY_S": str(int(self.parameters.get("signal_delay_s", 30))),
            "SUBMITIT_LOCAL_NODEID": "0",
            "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
            "SUBMITIT_STDERR_TO_STDOUT": "",
            "SUBMITIT_EXECUTOR": "local",
            "CUDA_VISIBLE_DEVICES": "",
            "SUBMITIT_LOCAL_WITH_SHELL": "",
        }
        command_line = [sys.executable, "-m", "submitit.local._local", str(self.folder)]
        with open(self.folder / "controllers.log", "ab") as log:
            process = subprocess.Popen(
                command_line,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        return LocalJob(folder=self.folder, job_id=str(process.pid), process=process, tasks=[0])
