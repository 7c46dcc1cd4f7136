"""What runs inside a job: the cells of one submission, each through the study's task.

A job runs one or more cells in turn (an array task runs its pack, a local lane claims cells
from the whole list). For each cell it writes the run-directory files (sweeper.run.rundir), keeps a
heartbeat, captures stdout/stderr, and records a result or a failure with its cause.

Preemption and time limits: submitit calls `Worker.checkpoint` from its signal handler in the
main thread. The task runs in a second thread, so the handler can ask it to save at its next
step boundary (`ctx.checkpoint_if_requested`) and wait for that before submitit requeues the
job. The requeued job runs the same cells again; finished ones are skipped and the
interrupted one resumes from its checkpoint.

Local lanes have no scheduler to enforce a time limit, so the lane keeps each cell's own
(`time_limits`, from timeout_min): past it, the task is asked to save the same way, and the cell
ends INTERRUPTED with cause TIMEOUT (`sweeper resume` continues it) while the lane goes on. A task
that does not save within CHECKPOINT_GRACE_S cannot be stopped (it is a thread), so the lane
process ends, as SLURM ends a job at its time limit. `sweeper cancel` stops a running cell the
same way (its `cancel` file) and the job goes on with its other cells; a local lane whose task
does not stop is restarted by its submitit controller (requeue exit code) to run them.

Kept light on imports: every job pays for them at start-up.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import chdir
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit
from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE

from sweeper.run.rundir import RunDir, Values, describe, read_json, write_json
from sweeper.run.status import Status
from sweeper.states import ENDED, Cause, CellState
from sweeper.task import import_object

HEARTBEAT_S = float(os.environ.get("SWEEPER_HEARTBEAT_S", "15"))
CHECKPOINT_GRACE_S = float(os.environ.get("SWEEPER_CHECKPOINT_GRACE_S", "60"))


class Interrupted(BaseException):
    """Unwinds a task after it saved its checkpoint on request (not an Exception: tasks must not catch it)."""


class Pruned(BaseException):
    """Unwinds a task whose search pruned it (not an Exception: tasks must not catch it)."""


class NonFiniteMetric(ValueError):
    """A reported or returned value is NaN or infinite: the cell fails with cause NAN."""


class WorkerContext:
    """What a task gets from the orchestrator besides its config (it satisfies sweeper.task.TaskContext)."""

    def __init__(
        self,
        run: RunDir,
        cache_dir: Path,
        key: str,
        attempt: int,
        rank: int,
        requested: threading.Event,
        world_size: int = 1,
    ):
        self.run_dir = run.path
        self.cache_dir = cache_dir
        self.key = key
        self.attempt = attempt
        self.rank = rank
        self.world_size = world_size
        self._run = run
        self._requested = requested
        self.saved = threading.Event()
        self.nonfinite: str | None = None  # the first non-finite value reported: the cell fails with NAN
        self._reported: set[str] = set()

    def report(self, step: int, metrics: dict[str, float], total: int | None = None) -> None:
        """Record intermediate values (progress, pruning); appended to metrics.jsonl. `total`, the
        step the task ends at, lets `--wait` show step/total and a running cell's part of the ETA.

        A run's first report of a metric replaces what earlier runs (attempts, or this one before
        a requeue) reported for it from that step on: a resumed run redoes those steps. A NaN or
        infinite value is kept apart from the finite ones and stops the task (NonFiniteMetric,
        cause NAN).
        When a search has pruned the cell since, this stops the task. Only a one-process task:
        the ranks of a multi-process one would see the request at different steps and one
        would wait forever in a collective, so such a trial runs to its end (and a NaN fails it then).
        """
        if self.rank != 0:
            return
        values = Values.of(metrics if isinstance(metrics, dict) else {"metrics": metrics})
        if values.invalid:
            raise TypeError(
                f"ctx.report(step={step}): {describe(values.invalid)}; expected a number for each metric"
            )
        line = {"step": int(step), "time": time.time(), "attempt": self.attempt, "metrics": values.finite}
        if total is not None:
            line["total"] = int(total)
        if values.nonfinite:
            line["nonfinite"] = values.nonfinite
        new = set(values.finite) | set(values.nonfinite)
        if new - self._reported:
            self._run.supersede(int(step), new - self._reported)
            self._reported |= new
        with self._run.metrics.open("a") as f:
            f.write(json.dumps(line) + "\n")
        if values.nonfinite and self.nonfinite is None:
            self.nonfinite = f"{describe(values.nonfinite)} at step {int(step)}"
            if self.world_size == 1:
                raise NonFiniteMetric(self.nonfinite)
        if self.world_size == 1 and self._run.prune.exists():
            raise Pruned()

    @property
    def checkpoint_requested(self) -> bool:
        return self._requested.is_set()

    def checkpoint_if_requested(self, save: Callable[[], None]) -> None:
        """Call at step boundaries: when the scheduler asked for a checkpoint, save and unwind."""
        if self._requested.is_set():
            save()
            self.saved.set()
            raise Interrupted()


def failure_cause(exc: BaseException) -> Cause:
    """The worker's own classification; resume policy follows it."""
    name = type(exc).__name__
    if name in {"OutOfMemoryError", "MemoryError"}:
        return Cause.OUT_OF_MEMORY
    if "NonFinite" in name or "NaN" in name:
        return Cause.NAN
    return Cause.EXCEPTION


class Worker(submitit.helpers.Checkpointable):
    """The callable submitted to submitit: runs `keys` with the task named `task`."""

    def __init__(
        self,
        task: str,
        workdir: str,
        keys: list[str],
        token: str,
        *,
        lane: int | None = None,
        threads: int | None = None,
        capture: bool = True,
        time_limits: dict[str, float] | None = None,
    ):
        # lane: local lanes share one list of cells and claim them; array tasks run their own pack.
        # threads: a cap for OpenMP/MKL (hence torch) when several lanes share one machine.
        # capture: send the cell's stdout/stderr to its log files (off in-process, so pdb talks to you).
        # time_limits: seconds per cell key, kept by this process (local lanes).
        self.task, self.workdir, self.keys, self.token, self.lane = task, workdir, keys, token, lane
        self.threads, self.capture, self.time_limits = threads, capture, time_limits or {}
        self._ending: threading.Event | None = None
        self._requested: threading.Event | None = None
        self._ctx: WorkerContext | None = None
        self._current: RunDir | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _ending=None, _requested=None, _ctx=None, _current=None)

    # ------------------------------------------------------------------ job entry point

    def __call__(self) -> dict[str, str]:
        self._ending = threading.Event()  # set by checkpoint(): every cell from then on saves and stops
        env = _job_environment()
        rank = env.global_rank if env else 0
        if env and env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if self.threads:  # before the task imports torch, which reads these once
            for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(var, str(self.threads))
        try:
            fn = import_object(self.task)
        except Exception as exc:  # a task that cannot be imported fails each cell, with the reason
            fn = _failing(exc, traceback.format_exc())
        job_id = env.job_id if env else str(os.getpid())
        states = {}
        for key in self.keys:
            run = RunDir.of(self.workdir, key)
            if not self._should_run(run, rank, job_id):
                states[key] = "SKIPPED"
                continue
            try:
                states[key] = self._run_cell(fn, run, key, rank, job_id, env.num_tasks if env else 1)
            except submitit.core.utils.UncompletedJobError as exc:  # raised by submitit's signal handler
                if rank == 0 and "timed-out too many times" in str(exc):
                    _record_give_up(run, self.token)
                raise
        return states

    def _should_run(self, run: RunDir, rank: int, job_id: str) -> bool:
        if run.result.exists() or run.cancel.exists() or run.prune.exists():
            return False
        expected = read_json(run.attempt) or {}
        if expected.get("token") != self.token:
            return False  # resubmitted since: a newer attempt owns this cell
        if _ended(Status.read(run.status, strict=False), self.token):
            return False  # this submission took it to an end already (a lane its controller restarted)
        # Lanes sharing a list claim each cell; an array task (same id after a requeue) claims its own.
        # A claim also loses to the controller's "void", when it took back a submission it lost.
        owner = f"lane-{self.lane}" if self.lane is not None else f"job-{job_id}"
        return rank != 0 or run.claim(self.token, owner)

    def _run_cell(self, fn: Callable, run: RunDir, key: str, rank: int, job_id: str, world_size: int) -> str:
        ending = self._ending
        assert ending is not None  # __call__ made it
        attempt = (read_json(run.attempt) or {}).get("number", 1)
        previous = Status.read(run.status, strict=False)
        restarts = 0
        if previous.token == self.token:
            restarts = (-1 if previous.restarts is None else previous.restarts) + 1
        status = Status(
            state=CellState.RUNNING,
            token=self.token,
            attempt=attempt,
            job_id=job_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=time.time(),
            restarts=restarts,
        )
        if rank == 0:
            status.write(run.status)
        config = read_json(run.config)
        requested = self._requested = threading.Event()
        if ending.is_set():  # after the assignment: checkpoint() may run between any two lines
            requested.set()
        ctx = WorkerContext(
            run, Path(self.workdir).resolve() / "cache", key, attempt, rank, requested, world_size
        )
        self._ctx, self._current = ctx, run
        outcome: dict[str, Any] = {}
        # The task's cwd is its run directory (a relative torch.save lands there); the debug executor
        # runs in the launching process, whose cwd chdir gives back after the cell.
        with (
            _Heartbeat(run.heartbeat if rank == 0 else None),
            chdir(run.path),
            _capture(run.logs, attempt if rank == 0 and self.capture else None),
        ):
            thread = threading.Thread(
                target=_call_task, args=(fn, config, ctx, outcome), name=f"task-{key}", daemon=True
            )
            thread.start()
            why = _join(thread, requested, self.time_limits.get(key), run, status, self.lane is not None)
        self._ctx = self._current = None
        if "interrupted" in outcome:
            if why and not ending.is_set():  # the lane's clock or `sweeper cancel`: record it, go on
                replace(status, **_STOPPED[why], checkpointed=True, ended=time.time()).write(run.status)
                return _STOPPED[why]["state"]
            return CellState.INTERRUPTED  # else checkpoint() records it and requeues the job
        status = replace(status, ended=time.time())
        if "pruned" in outcome:
            if rank == 0:
                replace(status, state=CellState.PRUNED, reason=run.prune.read_text().strip()).write(
                    run.status
                )
            return CellState.PRUNED
        if "error" in outcome:
            exc, tb = outcome["error"]
            status = replace(
                status,
                state=CellState.FAILED,
                cause=failure_cause(exc),
                error=f"{type(exc).__name__}: {exc}",
                traceback=tb,
            )
            if isinstance(exc, NonFiniteMetric) and "result" in outcome:  # the finite values are kept
                status = replace(status, result=outcome["result"])
            if rank == 0:
                status.write(run.status)
            return CellState.FAILED
        if rank == 0:
            write_json(run.result, outcome["result"])
            replace(status, state=CellState.COMPLETED).write(run.status)
        return CellState.COMPLETED

    # ------------------------------------------------------------------ preemption / time limit

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Ask the running task to save, wait for it (bounded), then let submitit requeue us."""
        ctx, run = self._ctx, self._current
        if self._ending is not None:
            self._ending.set()
        if self._requested is not None:
            self._requested.set()
        if ctx is not None and run is not None:
            ctx.saved.wait(timeout=CHECKPOINT_GRACE_S)
            if ctx.rank == 0:
                replace(
                    Status.read(run.status, strict=False),
                    state=CellState.INTERRUPTED,
                    cause=Cause.REQUEUED,
                    checkpointed=ctx.saved.is_set(),
                    ended=time.time(),
                ).write(run.status)
        return super().checkpoint(*args, **kwargs)


# Why a worker asked a task to save and stop (_join), and what the cell's status then records.
_STOPPED: dict[str, dict[str, Any]] = {
    Cause.TIMEOUT: {"state": CellState.INTERRUPTED, "cause": Cause.TIMEOUT},
    Cause.CANCELLED: {"state": CellState.CANCELLED, "cause": Cause.CANCELLED},
}


def _ended(status: Status, token: str) -> bool:
    """Did the attempt `token` end this cell (not merely get interrupted by a requeue)?"""
    state = status.state
    return status.token == token and (
        state in ENDED - {CellState.INTERRUPTED}
        or state == CellState.INTERRUPTED
        and status.cause == Cause.TIMEOUT
    )


def _record_give_up(run: RunDir, token: str) -> None:
    """SLURM's time limit came once too often: submitit ends the job instead of requeueing it."""
    status = Status.read(run.status, strict=False)
    if status.token == token and status.state in (CellState.RUNNING, CellState.INTERRUPTED):
        replace(
            status,
            state=CellState.INTERRUPTED,
            cause=Cause.TIMEOUT,
            ended=time.time(),
            detail="reached the time limit (timeout_min) too many times: submitit stopped "
            "requeueing it; "
            "`sweeper resume` continues it" + (" from its checkpoint" if status.checkpointed else ""),
        ).write(run.status)


def _join(
    thread: threading.Thread,
    requested: threading.Event,
    limit: float | None,
    run: RunDir,
    status: Status,
    lane: bool,
) -> str | None:
    """Wait for the task. `limit` seconds in, or once the cell has a `cancel` file (`sweeper cancel`),
    ask it to save and unwind; returns why ("TIMEOUT", "CANCELLED"), None if it was not asked.

    A thread cannot be stopped: if the task has not unwound CHECKPOINT_GRACE_S later, this process
    ends. Past a time limit, as SLURM ends a job at its limit. On a cancel, a local lane ends with
    submitit's requeue code, so its controller starts it again for the lane's other cells.
    """
    deadline = None if limit is None else time.monotonic() + limit
    why = None
    while thread.is_alive() and why is None:
        left = 1.0 if deadline is None else deadline - time.monotonic()
        if run.cancel.exists():
            why = Cause.CANCELLED
        elif left <= 0:
            why = Cause.TIMEOUT
        else:
            thread.join(timeout=min(1.0, left))
    if why is None:
        return None
    requested.set()
    thread.join(timeout=CHECKPOINT_GRACE_S)
    if thread.is_alive():
        replace(status, **_STOPPED[why], checkpointed=False, ended=time.time()).write(run.status)
        if why == Cause.TIMEOUT:
            print(
                f"sweeper: past its time limit ({(limit or 0) / 60:g} min) the task did not save within "
                f"{CHECKPOINT_GRACE_S:g} s of the request; ending this lane",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)
        print(
            f"sweeper: cancelled, the task did not stop within {CHECKPOINT_GRACE_S:g} s of the request; "
            f"{'restarting this lane for its other cells' if lane else 'ending this job'}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(LOCAL_REQUEUE_RETURN_CODE if lane else 1)
    return why


def _call_task(fn: Callable, config: dict, ctx: WorkerContext, outcome: dict) -> None:
    try:
        result = fn(config, ctx)
        if not isinstance(result, dict):
            raise TypeError(
                f"the task returned {type(result).__name__}; expected a dict of metric name -> number"
            )
        values = Values.of(result)
        if values.invalid:
            raise TypeError(
                f"the task returned {describe(values.invalid)}; expected a number for each metric"
            )
        outcome["result"] = values.finite
        if values.nonfinite:
            raise NonFiniteMetric(f"the task returned {describe(values.nonfinite)}")
        if ctx.nonfinite:  # reported, and the task went on (it caught the exception, or has several ranks)
            raise NonFiniteMetric(f"it reported {ctx.nonfinite}")
    except Interrupted:
        outcome["interrupted"] = True
    except Pruned:
        outcome["pruned"] = True
    except BaseException as exc:  # noqa: BLE001 - every failure of the task is recorded, none escapes the thread
        outcome["error"] = (exc, traceback.format_exc())
        # Into the cell's log; under the debug executor, on the terminal among other cells' output.
        print(
            f"sweeper: the task failed on cell {ctx.key} ({ctx.run_dir})\n{outcome['error'][1]}",
            file=sys.stderr,
            flush=True,
        )


def _failing(exc: Exception, tb: str) -> Callable:
    def task(config: dict, ctx: WorkerContext) -> dict:
        raise RuntimeError(f"cannot import the task: {type(exc).__name__}: {exc}\n{tb}")

    return task


def _job_environment() -> submitit.JobEnvironment | None:
    try:
        return submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (debug executor, tests)
        return None


class _Heartbeat:
    """Touches a file every HEARTBEAT_S seconds so a dead worker shows as a stale heartbeat."""

    def __init__(self, path: Path | None):
        self.path = path
        self.stop = threading.Event()

    def __enter__(self) -> _Heartbeat:
        if self.path is not None:
            self.path.touch()
            threading.Thread(target=self._beat, args=(self.path,), daemon=True, name="heartbeat").start()
        return self

    def _beat(self, path: Path) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            path.touch()

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()


class _capture:
    """Send fds 1 and 2 (C-level output too) to the cell's log files for the duration of a cell."""

    def __init__(self, logs: Path, attempt: int | None):
        self.logs, self.attempt = logs, attempt

    def __enter__(self) -> _capture:
        if self.attempt is None:
            return self
        self.logs.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush(), sys.stderr.flush()
        self.saved = [os.dup(1), os.dup(2)]
        for fd, suffix in ((1, "out"), (2, "err")):
            target = os.open(
                self.logs / f"attempt-{self.attempt}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            os.dup2(target, fd)
            os.close(target)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.attempt is None:
            return
        sys.stdout.flush(), sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved, strict=False):
            os.dup2(saved, fd)
            os.close(saved)
