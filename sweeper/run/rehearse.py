"""`sweeper rehearse STUDY.yaml`: every distinct config of a study runs a few real steps here, on
the login node, before anything is submitted; nothing is recorded in the store.

The study names its rehearsal hook (`rehearse: module.path:object`); like `check`, it is imported only
in child processes, as sweeper never imports the task's code. The hook has two functions:

- `plan(configs, processes) -> units`: groups the selected configs into units of work, each a JSON
  mapping whose `cells` lists the indices of the configs it rehearses (a task rehearses each distinct
  training shape once and each evaluation once, say). `processes[i]` is the number of processes the
  job of config i runs, its world size: nodes x tasks_per_node of the cell's resolved resources under
  the slurm executor, 1 under local and debug (they start one task). A unit may set `processes: n`
  (default 1): it is then rehearsed by n processes;
- `run(unit, steps=N, workdir=DIR, shared=DIR, stage=callback) -> {figure: value}`: rehearses one
  unit, calling `stage(name)` as it enters each stage, and returns figures (`seconds_per_step` is
  shown). `workdir` is the unit's scratch (deleted after it), `shared` lives for the whole rehearsal.
  In a unit of n > 1 processes every process calls `run`, with the environment torchrun gives its
  workers (MASTER_ADDR, MASTER_PORT: a free port per unit, RANK, LOCAL_RANK, WORLD_SIZE,
  LOCAL_WORLD_SIZE; OMP_NUM_THREADS, unless set, shares the cores); the figures shown are rank 0's.

Each unit runs in child processes of its own, so that its peak memory is its own (the sum over its
processes of each one's VmHWM; for a child that was killed, `wait4`'s maxrss, which also counts the
launching process's RSS at the fork) and a crash or an out-of-memory kill fails that unit only,
naming the stage it had reached. When one rank of a unit fails (an exception, a crash, a kill), the
unit fails with that rank named; the other ranks get GRACE_S to end, then are killed, so that a rank
waiting for it in a collective never hangs the rehearsal. Once a rank has ended well, the others get
as long again as the unit has run (at least JOIN_MIN_S), then are killed and reported as hung.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweeper.errors import UserError, did_you_mean
from sweeper.study import SEED_AXIS, Cell, Study, canonical

_TAIL = 3  # lines of a crashed unit's stderr shown as its error
GRACE_S = 3.0  # after a rank of a unit failed: the others' time to end on their own before they are killed
JOIN_MIN_S = 60.0  # after a rank of a unit ended well: the least time the others get before they are killed


@dataclass
class Row:
    """One rehearsed unit: the cells it stands for and how far it got."""

    labels: dict[str, str]  # axis -> label, or 'a|b' when the unit covers several
    cells: int
    stage: str = ""
    ok: bool = False
    error: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # the sum over the unit's processes
    figures: dict[str, float] = field(default_factory=dict)
    processes: int = 1


def select(study: Study, only: dict[str, set[str]], cover: list[str] | None) -> list[Cell]:
    """The cells to rehearse: `--only` filtered, one per config up to the seed, and with `--cover`
    a few that between them hold every label of every axis and every combination of the labels of
    each comma-separated group of axes named."""
    cells = list(study.search.templates.values()) if study.search else study.cells
    cells = [c for c in cells if all(str(c.labels[a]) in v for a, v in only.items())]
    unique: dict[str, Cell] = {}
    for cell in cells:
        unique.setdefault(canonical({k: v for k, v in cell.config.items() if k != SEED_AXIS}), cell)
    cells = list(unique.values())
    if cover is None:
        return cells
    axes = [a for a in study.axis_names if a != SEED_AXIS]
    groups = [[a.strip() for a in item.split(",") if a.strip()] for item in cover]
    for name in (a for g in groups for a in g):
        if name not in axes:
            raise UserError(
                f"--cover {name}: unknown axis{did_you_mean(name, axes)}; axes: {', '.join(axes)}"
            )

    def needs(cell: Cell) -> set:
        single = {((a, str(cell.labels[a])),) for a in axes}
        return single | {tuple((a, str(cell.labels[a])) for a in g) for g in groups}

    wanted, chosen = set().union(*map(needs, cells)), set()
    while wanted:  # greedy set cover; the first cell of the study wins ties
        best = max(range(len(cells)), key=lambda i: len(needs(cells[i]) & wanted))
        chosen.add(best)
        wanted -= needs(cells[best])
    return [c for i, c in enumerate(cells) if i in chosen]


@dataclass
class _Process:
    """One child process of a unit (or of the plan): what it said and how it ended."""

    proc: subprocess.Popen
    pidfd: int  # signals reach this process even after its pid was reaped and reused
    log: Path
    stage: str = ""
    result: dict | None = None  # its last protocol line without a stage
    code: int | None = None  # its exit status, once it has ended
    peak_mb: float = 0.0
    killed: bool = False  # by this rehearsal, after another rank failed or it hung
    error: str = ""
    failed_at: int = 0  # the order in which the unit's ranks failed

    @property
    def failed(self) -> bool:
        return bool(self.error) or (self.result is not None and not self.result.get("ok", True))

    def kill(self) -> None:
        if self.code is None and not self.killed:
            self.killed = True
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:  # it ended on its own meanwhile
                pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives worker `rank` of `world` on one host."""
    threads = str(max(1, len(os.sched_getaffinity(0)) // world))
    return os.environ | {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
    }


def _pump(rank: int, child: _Process, events: queue.Queue) -> None:
    """Forward `child`'s JSON lines to `events`, then its end (exit status, wait4's maxrss)."""
    assert child.proc.stdout is not None
    for line in child.proc.stdout:
        events.put((rank, json.loads(line)))
    _, status, usage = os.wait4(child.proc.pid, 0)  # this child's own rusage, even when it was killed
    child.proc.returncode = os.waitstatus_to_exitcode(status)
    events.put((rank, {"exit": child.proc.returncode, "maxrss_mb": usage.ru_maxrss / 1024}))


def _children(
    hook: str, request: dict, logs: list[Path], on_line: Callable[[int, dict], None]
) -> list[_Process]:
    """Run `python -m sweeper.run.rehearse HOOK` on `request` in one process per log (ranks of one job
    when several); each JSON line a rank writes goes to `on_line(rank, line)`. A rank that fails
    ends the others after GRACE_S; a rank that ended well leaves the others until the join deadline
    (module docstring)."""
    port = _free_port() if len(logs) > 1 else 0
    events: queue.Queue = queue.Queue()
    children = []
    for rank, log in enumerate(logs):
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sweeper.run.rehearse", hook],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=_rank_env(rank, len(logs), port) if len(logs) > 1 else None,
            )
        children.append(_Process(proc, os.pidfd_open(proc.pid), log))
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
        threading.Thread(target=_pump, args=(rank, children[-1], events), daemon=True).start()
    started, deadline, why = time.monotonic(), float("inf"), ""
    try:
        while any(c.code is None for c in children):
            try:
                rank, event = events.get(timeout=max(0.0, min(deadline - time.monotonic(), 3600)))
            except queue.Empty:
                if deadline > time.monotonic():
                    continue
                for child in children:
                    if why and child.code is None:
                        child.error = why
                    child.kill()
                deadline = float("inf")
                continue
            child = children[rank]
            if "exit" in event:
                child.code, child.peak_mb = event["exit"], child.peak_mb or event["maxrss_mb"]
                if not child.killed and (child.code != 0 or child.result is None):
                    child.error = _crash(child.code, child.log)
            elif "stage" in event:
                child.stage = event["stage"]
            else:
                child.result, child.peak_mb = event, event.get("peak_rss_mb", 0.0)
            if "exit" not in event:
                on_line(rank, event)
            now = time.monotonic()
            if child.failed and not child.killed and not child.failed_at:
                child.failed_at = sum(c.failed_at > 0 for c in children) + 1
                deadline, why = min(deadline, now + GRACE_S), ""
            elif child.code == 0 and deadline == float("inf") and any(c.code is None for c in children):
                wait = max(JOIN_MIN_S, now - started)
                deadline, why = now + wait, f"did not end within {wait:.0f} s of rank {rank} (hung?)"
    finally:
        for child in children:
            child.kill()  # only when this rehearsal itself is interrupted: a no-op for ended ones
            os.close(child.pidfd)
    return children


def _crash(code: int, log: Path) -> str:
    tail = " / ".join(log.read_text(errors="replace").strip().splitlines()[-_TAIL:])
    if code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{why}" + (f": {tail}" if tail else "")
    return tail or f"exited with status {code}"


def world_size(study: Study, cell: Cell) -> int:
    """The number of processes the job of `cell` runs (module docstring)."""
    if study.executor.kind != "slurm":
        return 1
    return int(cell.resources.get("nodes", 1)) * int(cell.resources.get("tasks_per_node", 1))


def plan(study: Study, cells: list[Cell], scratch: Path, max_processes: int | None = None) -> list[dict]:
    """The hook's units for `cells` (each with `cells`: indices into that list); `max_processes` caps
    the world size the hook is told (1: every config rehearsed in one process, where memory is short)."""
    if not study.rehearse:
        raise UserError(
            f"{study.file}: rehearse: the study names no rehearsal hook; add e.g. "
            "'rehearse: model.rehearsal:rehearsal' (a 'module.path:object' with plan and run)"
        )
    worlds = [min(world_size(study, c), max_processes or sys.maxsize) for c in cells]
    request = {"plan": [c.config for c in cells], "processes": worlds}
    (child,) = _children(study.rehearse, request, [scratch / "plan.log"], lambda rank, line: None)
    if child.code != 0 or child.result is None:
        why = _crash(child.code or 0, child.log)
        raise UserError(f"{study.file}: rehearse: {study.rehearse} could not plan: {why}")
    return child.result["units"]


def rehearse(
    study: Study,
    cells: list[Cell],
    *,
    steps: int,
    max_processes: int | None = None,
    progress: Callable[[int, int, Row], None] | None = None,
) -> list[Row]:
    """Rehearse `cells` unit by unit (module docstring); one Row per unit, in the hook's order."""
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-rehearse-"))
    try:
        units = plan(study, cells, scratch, max_processes)
        rows = []
        for n, unit in enumerate(units, 1):
            covered = [cells[i] for i in unit["cells"]]
            labels = {
                a: "|".join(dict.fromkeys(str(c.labels[a]) for c in covered))
                for a in study.axis_names
                if a != SEED_AXIS
            }
            row = Row(labels, len(covered), processes=int(unit.get("processes", 1)))
            rows.append(row)
            workdir = scratch / f"unit-{n}"
            workdir.mkdir()
            request = {
                "run": unit,
                "steps": steps,
                "workdir": str(workdir),
                "shared": str(scratch / "shared"),
            }
            started = time.perf_counter()

            def line(rank: int, event: dict, row: Row = row, n: int = n) -> None:
                if rank == 0 and "stage" in event:
                    row.stage = event["stage"]
                    if progress:
                        progress(n, len(units), row)

            logs = [scratch / f"unit-{n}.{rank}.log" for rank in range(row.processes)]
            _settle(row, _children(study.rehearse or "", request, logs, line))
            row.seconds = time.perf_counter() - started
            shutil.rmtree(workdir, ignore_errors=True)  # checkpoints of a large model weigh GBs
        return rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _settle(row: Row, ranks: list[_Process]) -> None:
    """The row of a unit from its ranks: rank 0's figures, the sum of their peaks, and the first
    failure (a rank that died without a word before one that reported an error, which may only be
    the collective it shared with the dead one)."""
    row.peak_rss_mb = sum(r.peak_mb for r in ranks)
    row.figures = {k: float(v) for k, v in (ranks[0].result or {}).get("figures", {}).items()}
    failed = sorted((r for r in ranks if r.failed), key=lambda r: (r.result is not None, r.failed_at))
    row.ok = not failed
    if failed:
        rank = ranks.index(failed[0])
        error = failed[0].error or str(failed[0].result and failed[0].result.get("error"))
        row.stage = failed[0].stage
        row.error = f"rank {rank}: {error}" if len(ranks) > 1 else error


def _peak_mb() -> float:
    """This process's peak RSS since its exec (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


def main() -> None:
    """The child: plan, or run one unit; JSON lines on the real stdout, the task's prints on stderr."""
    from sweeper.task import import_object

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the task prints must not mix with the protocol
    sys.stdout = sys.stderr
    hook: Any = import_object(sys.argv[1])  # a module or object with plan() and run()
    request = json.load(sys.stdin)
    if "plan" in request:
        protocol.write(json.dumps({"units": hook.plan(request["plan"], request["processes"])}) + "\n")
        return

    def stage(name: str) -> None:
        protocol.write(json.dumps({"stage": name}) + "\n")

    try:
        figures = hook.run(
            request["run"],
            steps=request["steps"],
            workdir=Path(request["workdir"]),
            shared=Path(request["shared"]),
            stage=stage,
        )
    except Exception as exc:  # the unit's failure is the result; its stage was announced already
        import traceback

        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        protocol.write(json.dumps({"ok": False, "error": error, "peak_rss_mb": _peak_mb()}) + "\n")
        return
    figures = {k: float(v) for k, v in (figures or {}).items()}
    protocol.write(json.dumps({"ok": True, "figures": figures, "peak_rss_mb": _peak_mb()}) + "\n")


if __name__ == "__main__":
    main()
