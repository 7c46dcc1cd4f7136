"""The task contract: what a study's `task:` function receives and returns, and its `check:` hook.

A study names its task as `module.path:function` (e.g. `model.experiment:run`). The worker calls
it with the cell's config and a context satisfying TaskContext, and stores the numbers it
returns; `check` looks at the configs before anything is submitted. A project types its code
against these and never imports the worker (sweeper.run.worker.WorkerContext is the real one).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol


class TaskContext(Protocol):
    """What a task gets besides its config."""

    run_dir: Path  # the cell's run directory, also the task's working directory
    cache_dir: Path | None  # shared by the study's cells (e.g. a pretrained backbone other cells reuse)

    def report(self, step: int, metrics: dict[str, float], total: int | None = None) -> None:
        """Values at a step (progress, curves, a search's pruner); `total`: the steps the task will run."""

    def checkpoint_if_requested(self, save: Callable[[], None]) -> None:
        """At a step boundary: when asked to stop (preemption, time limit, cancel), save and unwind."""


# run(config, ctx) -> final metrics by name; check(config) -> problems (empty: fine)
Task = Callable[[dict[str, Any], TaskContext], Mapping[str, float]]
Check = Callable[[dict[str, Any]], list[str]]


def import_object(spec: str) -> Callable:
    """The object a "module.path:name" string names (a study's task or check). Here, not in the
    worker, so that plan's check child imports the task and no more (not submitit)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["Check", "Task", "TaskContext"]
