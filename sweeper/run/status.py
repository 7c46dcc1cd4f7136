"""status.json, typed: what the worker of one submission says of its cell.

The worker writes it (sweeper.run.worker); ingestion and `sweeper rebuild` read it. A dataclass,
not a pydantic model: every job imports this at start-up, and the worker loads no pydantic.

The file's keys are these fields' names; a field that is None is left out, so a file reads as
workers have always written it, and files already on disk read as they are. Missing, torn or
non-object content reads as an empty Status (a worker not started yet, or killed mid-write; one
bad file stops no reader). An object whose known keys hold what no worker writes raises
StatusError, naming the file and the key (unless read with strict=False); keys this version does
not know are ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.run.rundir import read_json, write_json
from sweeper.states import Cause, CellState


class StatusError(ValueError):
    """A status.json holding a value no worker writes (the file, the key, what was expected)."""


@dataclass(frozen=True)
class Status:
    state: CellState | None = None
    token: str | None = None  # the submission (attempt.json's token) this worker ran for
    attempt: int | None = None  # attempt.json's number
    job_id: str | None = None  # the scheduler's job id (a local lane: its pid)
    host: str | None = None
    pid: int | None = None
    started: float | None = None  # seconds since the epoch
    ended: float | None = None
    restarts: int | None = None  # how often this submission started the cell again (a requeue)
    cause: Cause | None = None  # why it ended unsuccessfully
    error: str | None = None  # the task's exception, "Type: message"
    traceback: str | None = None
    detail: str | None = None  # said to the user as it is (submitit gave up requeueing)
    reason: str | None = None  # a search pruner's, when PRUNED
    checkpointed: bool | None = None  # an interrupted task saved before it stopped
    result: dict[str, Any] | None = None  # the finite values a NAN failure kept

    def to_json(self) -> dict[str, Any]:
        return {f.name: v for f in _FIELDS if (v := getattr(self, f.name)) is not None}

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def of(cls, data: Any, file: str | Path = "status.json") -> Status:
        """The status a JSON value holds; see the module's docstring for what is not one."""
        if not isinstance(data, dict):
            return cls()
        values = {}
        for f in _FIELDS:
            v = data.get(f.name)
            if v is None:
                continue
            parse, expected = _PARSERS[f.name]
            try:
                values[f.name] = parse(v)
            except (TypeError, ValueError):
                raise StatusError(f"{file}: '{f.name}' is {v!r}; expected {expected}") from None
        return cls(**values)

    @classmethod
    def read(cls, path: Path, *, strict: bool = True) -> Status:
        """strict=False: a file holding no status reads as none, as a torn one does (for readers that
        look only for their own submission's word: the worker, `sweeper rebuild`; ingestion, strict,
        fails the cell with the reason)."""
        try:
            return cls.of(read_json(path), path)
        except StatusError:
            if strict:
                raise
            return cls()


def _typed(*types: type) -> Any:
    """A parser taking values of `types` only (true is no integer); a time, int or float, becomes a float."""

    def parse(v: Any) -> Any:
        ok = isinstance(v, types) and (bool in types or not isinstance(v, bool))
        if not ok:
            raise TypeError
        return float(v) if float in types else v

    return parse


_FIELDS = dataclasses.fields(Status)
_TEXT = (_typed(str), "text")
_PARSERS: dict[str, tuple[Any, str]] = {
    "state": (CellState, f"one of {', '.join(CellState)}"),
    "cause": (Cause, f"one of {', '.join(Cause)}"),
    "token": _TEXT,
    "job_id": _TEXT,
    "host": _TEXT,
    "error": _TEXT,
    "traceback": _TEXT,
    "detail": _TEXT,
    "reason": _TEXT,
    "attempt": (_typed(int), "an integer"),
    "pid": (_typed(int), "an integer"),
    "restarts": (_typed(int), "an integer"),
    "started": (_typed(int, float), "seconds since the epoch"),
    "ended": (_typed(int, float), "seconds since the epoch"),
    "checkpointed": (_typed(bool), "true or false"),
    "result": (_typed(dict), "an object of metric values"),
}
