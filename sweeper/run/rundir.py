"""The run directory of a cell: the files a job writes and the controller reads.

Jobs never open the database (design.md, "single writer"): they write these files, each
atomically (temp file + rename), and `sweeper status` ingests them. The store can be rebuilt
from them.

    <workdir>/cells/<key>/config.json     the resolved config (written by the controller)
                         attempt.json     {token, number}: the submission this directory expects
                         status.json      the worker's word: state, cause, host, pid, job id, times,
                                          restarts, error (typed: sweeper.run.status)
                         heartbeat        touched by the worker while the task runs
                         metrics.jsonl    {"step", "attempt", "metrics"[, "nonfinite"]} lines from ctx.report;
                                          a resumed run's first report of a metric drops what earlier
                                          runs reported for it from that step on (it redoes them)
                         result.json      the task's final metrics: the truth of completion
                         attempts/N.json  how attempt N ended (written by the controller), for
                                          `sweeper rebuild`
                         logs/attempt-N.out|err
                         cancel           a request to skip or stop the cell
                         prune            a search pruner's request: stop at the next ctx.report
                         claim-<token>    who runs the cell for submission <token>: a worker, or
                                          "void" when the controller took back a submission it lost
    <workdir>/cache/                      shared between cells (stage caching)
    <workdir>/submitit/                   submitit's job folders
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(data, default=str))


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it is missing, unreadable or not JSON (one bad file stops no reader)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_dict(path: Path) -> dict:
    """A JSON object file's content; {} when it is missing, unreadable or not an object."""
    data = read_json(path)
    return data if isinstance(data, dict) else {}


@dataclass
class Values:
    """A {name: value} mapping sorted into finite numbers and the rest (as text, for messages)."""

    finite: dict[str, float] = field(default_factory=dict)
    nonfinite: dict[str, str] = field(default_factory=dict)  # nan, inf, -inf
    invalid: dict[str, str] = field(default_factory=dict)  # strings, lists, nested objects, null

    @classmethod
    def of(cls, values: Any) -> Values:
        out = cls()
        for name, v in values.items() if isinstance(values, dict) else ():
            number = _number(v)
            if number is None:
                out.invalid[str(name)] = repr(v)[:60]
            elif math.isfinite(number):
                out.finite[str(name)] = number
            else:
                out.nonfinite[str(name)] = str(number)
        return out


def _number(v: Any) -> float | None:
    """A number as a float (numpy and one-element torch scalars too); None for text, None, containers."""
    if isinstance(v, str | bytes) or v is None:
        return None
    try:
        return float(v)
    except Exception:  # noqa: BLE001 - whatever float() refuses is not a number
        return None


def describe(values: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, workdir: str | Path, key: str) -> RunDir:
        return cls(Path(workdir).resolve() / "cells" / key)

    config = property(lambda self: self.path / "config.json")
    attempt = property(lambda self: self.path / "attempt.json")
    status = property(lambda self: self.path / "status.json")
    heartbeat = property(lambda self: self.path / "heartbeat")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    result = property(lambda self: self.path / "result.json")
    cancel = property(lambda self: self.path / "cancel")
    prune = property(lambda self: self.path / "prune")
    logs = property(lambda self: self.path / "logs")
    outcomes = property(lambda self: self.path / "attempts")

    def claim(self, token: str, owner: str) -> bool:
        """Take the cell for `token` as `owner` (atomic, O_EXCL); True if it is ours, now or before."""
        path = self.path / f"claim-{token}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return path.read_text() == owner
        os.write(fd, owner.encode())
        os.close(fd)
        return True

    def heartbeat_age(self) -> float | None:
        try:
            return max(0.0, time.time() - self.heartbeat.stat().st_mtime)
        except FileNotFoundError:
            return None

    def last_report(self) -> dict | None:
        """The last complete line of metrics.jsonl (progress of a running cell)."""
        try:
            with self.metrics.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
        return None

    def reports(self) -> list[dict]:
        """The readable lines of metrics.jsonl (a line cut by a kill, or not an object, is skipped)."""
        try:
            lines = self.metrics.read_text().splitlines()
        except (OSError, ValueError):
            return []
        return [line for line in map(_line, lines) if line is not None]

    def reported(self) -> Reported:
        """What ctx.report recorded, one value per (metric, step): a later line (a resumed attempt) wins."""
        out = Reported()
        for line in self.reports():
            step, attempt = line.get("step"), line.get("attempt")
            if not isinstance(step, int) or isinstance(step, bool):
                continue
            attempt = attempt if isinstance(attempt, int) else None
            values = Values.of(line.get("metrics"))
            for name, value in values.finite.items():
                out.values[(name, step)] = (attempt, value)
            written = line.get("nonfinite")
            nonfinite = values.nonfinite | (written if isinstance(written, dict) else {})
            if nonfinite:
                out.nonfinite.setdefault(attempt, f"{describe(nonfinite)} at step {step}")
        return out

    def supersede(self, step: int, names: set[str]) -> None:
        """Drop what earlier runs reported for `names` at `step` or later, and any cut line.

        Called on a run's first report of each metric (a new attempt, or the same one requeued):
        it redoes the steps after its checkpoint, so their values replace, not repeat, those of
        the run before.
        """
        try:
            lines = self.metrics.read_text().splitlines()
        except (OSError, ValueError):
            return
        kept: list[str] = []
        for raw in lines:
            line = _line(raw)
            if line is None:
                continue
            step_of = line.get("step")
            if isinstance(step_of, int) and step_of >= step:
                for key in ("metrics", "nonfinite"):
                    if isinstance(line.get(key), dict):
                        line[key] = {k: v for k, v in line[key].items() if k not in names}
                if not line.get("metrics") and not line.get("nonfinite"):
                    continue
                raw = json.dumps(line)
            kept.append(raw)
        if kept != lines:
            _write_text(self.metrics, "".join(f"{raw}\n" for raw in kept))


@dataclass
class Reported:
    # (metric, step) -> (attempt, value); attempt -> its first non-finite value, as "loss=nan at step 3"
    values: dict[tuple[str, int], tuple[int | None, float]] = field(default_factory=dict)
    nonfinite: dict[int | None, str] = field(default_factory=dict)


def _line(raw: str) -> dict | None:
    try:
        line = json.loads(raw)
    except ValueError:  # a line cut by a kill
        return None
    return line if isinstance(line, dict) else None


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    """Is process `pid` (on this host) alive? A zombie, exited but not yet reaped, is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
