"""sweeper: declarative ablation sweeps for vision-transformer research.

`sweeper.load(study, db=None)` gives a study's cells and final metrics as a pandas DataFrame
(imported on first use, so the CLI and the jobs do not pay for pandas).
"""


def __getattr__(name: str):
    if name == "load":
        from sweeper.api import load

        return load
    raise AttributeError(f"module 'sweeper' has no attribute {name!r}")
