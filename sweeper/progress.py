"""What `--wait` says while it follows a study: counts, elapsed time and an ETA, as a live view in a
terminal and as plain lines in a pipe, a file, nohup or CI (one per change of counts, and at least
every SWEEPER_PROGRESS_S seconds, 30 by default, so a log never goes minutes without a line).

The ETA comes from the durations of the cells finished so far (their attempts' start and end) and
the cells in flight: each running cell still needs the part of a duration its step / total says
is left (when its task reports no total: a duration less the time it has run, at least a tenth),
the pending ones a whole one, spread over as many lanes as are running now.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sweeper.store import FINISHED as DONE
from sweeper.store import UNSUCCESSFUL, CellState, Store


def every_s() -> float:
    try:
        return max(1.0, float(os.environ.get("SWEEPER_PROGRESS_S", "30")))
    except ValueError:
        return 30.0


def counts(statuses: Sequence) -> dict[str, int]:
    """done / running / failed / pending (submitted, queued or not submitted yet)."""
    c = {"done": 0, "running": 0, "failed": 0, "pending": 0}
    for s in statuses:
        kind = (
            "done"
            if s.state in DONE
            else "running"
            if s.state == CellState.RUNNING
            else "failed"
            if s.state in UNSUCCESSFUL
            else "pending"
        )
        c[kind] += 1
    return c


def step_total(progress: dict | None) -> tuple[int | None, int | None]:
    """A running cell's last reported step and, when its task reports one, the total."""
    p = progress or {}
    step, total = p.get("step"), p.get("total")
    return (
        step if isinstance(step, int) else None,
        total if isinstance(total, int) and not isinstance(total, bool) and total > 0 else None,
    )


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class Eta:
    """Remaining time of a study being followed (see the module docstring)."""

    durations: dict[str, float] = field(default_factory=dict)  # finished cell key -> seconds
    started: dict[str, datetime] = field(default_factory=dict)  # running cell key -> its attempt's start

    def update(self, store: Store, statuses: Sequence) -> None:
        """Learn the durations of cells newly finished and the starts of those newly running (one
        query for those only)."""
        new = [
            s.key
            for s in statuses
            if (s.state == CellState.COMPLETED and s.key not in self.durations)
            or (s.state == CellState.RUNNING and s.key not in self.started)
        ]
        for key, a in store.latest_attempts(new).items() if new else ():
            if a.state == CellState.RUNNING and a.started_at is not None:
                self.started[key] = _utc(a.started_at)
            elif a.started_at is not None and a.ended_at is not None:
                self.durations[key] = max(0.0, (a.ended_at - a.started_at).total_seconds())

    def remaining(self, statuses: Sequence, now: datetime | None = None) -> float | None:
        if not self.durations:
            return None
        mean = statistics.fmean(self.durations.values())
        now = now or datetime.now(UTC)
        running = [s for s in statuses if s.state == CellState.RUNNING]
        left = 0.0
        for s in running:
            step, total = step_total(s.progress)
            if step is not None and total:
                left += 1 - min(step, total) / total
            elif s.key in self.started:
                left += max(0.1, 1 - (now - self.started[s.key]).total_seconds() / mean) if mean else 0.1
            else:
                left += 0.5
        left += counts(statuses)["pending"]
        return mean * left / max(1, len(running))


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)  # SQLite gives naive datetimes back


def eta_text(seconds: float | None, active: bool) -> str:
    if not active:
        return "finished"
    # Short: a line must fit 80 columns in a log (an ETA needs one finished cell's duration).
    return "no ETA yet" if seconds is None else f"ETA {duration(seconds)}"


class Lines:
    """The plain progress lines: printed on a change of counts, or when `every` seconds passed."""

    def __init__(self, name: str, every: float | None = None) -> None:
        self.name, self.every = name, every_s() if every is None else every
        self.start = self.last_time = time.monotonic()
        self.last: dict[str, int] | None = None

    def line(
        self, statuses: Sequence, eta: float | None, *, expected: int = 0, now: float | None = None
    ) -> str | None:
        now = time.monotonic() if now is None else now
        c = counts(statuses)
        if c == self.last and now - self.last_time < self.every:
            return None
        self.last, self.last_time = c, now
        total = max(expected, sum(c.values()))  # a search's trials not asked yet count too
        active = bool(c["running"] or c["pending"])
        return (
            f"{self.name}: {c['done']}/{total} done, {c['running']} running, {c['failed']} failed, "
            f"{c['pending']} pending; {duration(now - self.start)} elapsed, {eta_text(eta, active)}"
        )
