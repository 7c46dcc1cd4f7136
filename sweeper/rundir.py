"""The run directory of a cell: the files a job writes and the controller reads.

Jobs never open the database (design.md, "single writer"): they write these files, each
atomically (temp file + rename), and `sweeper status` ingests them. The store can be rebuilt
from them.

    <workdir>/cells/<key>/config.json     the resolved config (written by the controller)
                         attempt.json     {token, number}: the submission this directory expects
                         status.json      state, cause, host, pid, job id, times, restarts, error
                         heartbeat        touched by the worker while the task runs
                         metrics.jsonl    {"step", "metrics"} lines from ctx.report
                         result.json      the task's final metrics: the truth of completion
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
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


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
        try:
            lines = self.metrics.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
        return out


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
