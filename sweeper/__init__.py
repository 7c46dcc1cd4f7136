"""sweeper: declarative ablation sweeps for vision-transformer research.

`sweeper.load(study, db=None)` gives a study's cells and final metrics as a pandas DataFrame,
`sweeper.trials(study, db=None)` a search's trials with their parameters, `sweeper.curves(study,
db=None)` the values reported per step (all imported on
first use, so the CLI and the jobs do not pay for pandas). `TaskContext`, `Task` and `Check` are
the task contract (sweeper.task).
"""

from sweeper.task import Check, Task, TaskContext

__all__ = ["Check", "Task", "TaskContext", "curves", "load", "trials"]


def __getattr__(name: str):
    if name in ("load", "trials", "curves"):
        from sweeper import api

        return getattr(api, name)
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
