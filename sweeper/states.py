"""The states of cells, attempts and jobs, the causes of failures, and the sets decided on: defined once.

The store's vocabulary (sweeper.store re-exports it), kept in a module that imports nothing so
that a worker, which writes these states into status.json, never loads the database layer.
"""

from __future__ import annotations

from enum import StrEnum


class CellState(StrEnum):
    """A cell's (its latest attempt's) state; also what a worker writes in status.json."""

    PLANNED = "PLANNED"  # recorded, never submitted
    SUBMITTING = "SUBMITTING"  # intent recorded before the scheduler call
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INTERRUPTED = "INTERRUPTED"  # preempted, timed out, node failure: resumable
    CANCELLED = "CANCELLED"
    PRUNED = "PRUNED"  # stopped early by a search pruner; final


class SchedulerState(StrEnum):
    """The scheduler's word on a job, in sweeper's terms (each backend maps its own onto these)."""

    PENDING = "PENDING"  # queued, or requeued: it will run (again)
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"  # ended; the run directories say how each cell did
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    INTERRUPTED = "INTERRUPTED"
    UNKNOWN = "UNKNOWN"  # the scheduler has nothing to say (sacct down, the job purged)


class Cause(StrEnum):
    """Why an attempt ended unsuccessfully (the worker's, the scheduler's, or inferred)."""

    EXCEPTION = "EXCEPTION"
    NAN = "NAN"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    PREEMPTED = "PREEMPTED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    CANCELLED = "CANCELLED"
    REQUEUED = "REQUEUED"
    PRUNED = "PRUNED"
    KILLED = "KILLED"  # the worker died mid-cell
    LOST = "LOST"  # the job ended without running the cell
    NOT_SUBMITTED = "NOT_SUBMITTED"  # the launch died before its submission went out


ACTIVE = frozenset({CellState.SUBMITTING, CellState.PENDING, CellState.RUNNING})
FINISHED = frozenset({CellState.COMPLETED, CellState.PRUNED})
UNSUCCESSFUL = frozenset({CellState.FAILED, CellState.INTERRUPTED, CellState.CANCELLED})
ENDED = FINISHED | UNSUCCESSFUL
ALIVE = frozenset({SchedulerState.PENDING, SchedulerState.RUNNING})  # a job that will run, or runs, its cells
JOB_ENDED_BADLY = frozenset({SchedulerState.INTERRUPTED, SchedulerState.FAILED})
# The task's own faults: `sweeper resume` retries them only with --retry-failed (other causes: always).
USER_FAULTS = frozenset({Cause.EXCEPTION, Cause.NAN})


def category(state: str) -> str:
    """The plan's view of a state: what a launch would do with the cell."""
    if state == CellState.PLANNED:
        return "new"
    if state in FINISHED:
        return "done"
    if state in ACTIVE:
        return "running"
    return "failed"
