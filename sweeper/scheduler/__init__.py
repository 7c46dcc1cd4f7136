"""Scheduler backends, one per file, all through submitit: debug (in-process), local, slurm.

A backend submits groups of cells (cells with equal resources) as Workers and reports the
scheduler's view of the jobs it made, for every job in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sweeper.spec import DebugExecutor, LocalExecutor, SlurmExecutor
from sweeper.states import Cause, SchedulerState


@dataclass(frozen=True)
class Group:
    """Cells that share resources, hence one executor configuration (one array on SLURM)."""

    keys: list[str]
    resources: dict


@dataclass(frozen=True)
class JobState:
    """The scheduler's word on a job: a state in sweeper's terms and, when it ended badly, a cause."""

    state: SchedulerState
    cause: Cause | None = None
    # True when the state is that of lanes shared by many cells (local), not of the process that
    # runs this cell: a dead worker pid on this host then says more than "RUNNING".
    shared: bool = False


class Backend(Protocol):
    kind: str

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        """Submit every cell; returns cell key -> job id."""

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """The state of each job id, in one scheduler call."""

    def cancel(self, job_ids: list[str]) -> None: ...


def backend(executor: DebugExecutor | LocalExecutor | SlurmExecutor, folder: Path) -> Backend:
    if executor.kind == "slurm":
        from sweeper.scheduler.slurm import SlurmBackend

        return SlurmBackend(executor, folder)
    if executor.kind == "local":
        from sweeper.scheduler.local import LocalBackend

        return LocalBackend(executor, folder)
    from sweeper.scheduler.debug import DebugBackend

    return DebugBackend(folder)
