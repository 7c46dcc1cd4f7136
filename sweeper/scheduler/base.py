"""The interface every backend implements, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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
    inline: bool  # runs the cells in this process, before submit returns (their results are there to ingest)

    def submit(self, task: str, workdir: str, token: str, groups: list[Group], name: str) -> dict[str, str]:
        """Submit every cell; returns cell key -> job id."""

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        """The state of each job id, in one scheduler call."""

    def cancel(self, job_ids: list[str]) -> None:
        """Stop the jobs (a job's cells have their `cancel` files already)."""
