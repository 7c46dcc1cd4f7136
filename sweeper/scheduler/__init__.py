"""Scheduler backends, one per file, all through submitit: debug (in-process), local, slurm.

A backend submits groups of cells (cells with equal resources) as Workers and reports the
scheduler's view of the jobs it made, for every job in one call.
"""

from __future__ import annotations

from pathlib import Path

from sweeper.scheduler.base import Backend, Group, JobState
from sweeper.study import DebugExecutor, LocalExecutor, SlurmExecutor


def backend(executor: DebugExecutor | LocalExecutor | SlurmExecutor, folder: Path) -> Backend:
    if executor.kind == "slurm":
        from sweeper.scheduler.slurm import SlurmBackend

        return SlurmBackend(executor, folder)
    if executor.kind == "local":
        from sweeper.scheduler.local import LocalBackend

        return LocalBackend(executor, folder)
    from sweeper.scheduler.debug import DebugBackend

    return DebugBackend(folder)


__all__ = ["Backend", "Group", "JobState", "backend"]
