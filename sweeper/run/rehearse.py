"""`sweeper rehearse STUDY.yaml`: every distinct config of a study runs a few real steps here, on
the login node, before anything is submitted; nothing is recorded in the store.

The study names its rehearsal hook (`rehearse: module.path:object`); like `check`, it is imported only
in child processes, as sweeper never imports the task's code. The hook has two functions:

- `plan(configs) -> units`: groups the selected configs into units of work, each a JSON mapping whose
  `cells` lists the indices of the configs it rehearses (a task rehearses each distinct training
  shape once and each evaluation once, say);
- `run(unit, steps=N, workdir=DIR, shared=DIR, stage=callback) -> {figure: value}`: rehearses one
  unit, calling `stage(name)` as it enters each stage, and returns figures (`seconds_per_step` is
  shown). `workdir` is the unit's scratch (deleted after it), `shared` lives for the whole rehearsal.

Each unit runs in a child process of its own, so that its peak memory is its own (the child's VmHWM;
for a child that was killed, `wait4`'s maxrss, which also counts the launching process's RSS at the
fork) and a crash or an out-of-memory kill fails that unit only, naming the stage it had reached.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sweeper.errors import UserError, did_you_mean
from sweeper.study import SEED_AXIS, Cell, Study, canonical

_TAIL = 3  # lines of a crashed unit's stderr shown as its error


@dataclass
class Row:
    """One rehearsed unit: the cells it stands for and how far it got."""

    labels: dict[str, str]  # axis -> label, or 'a|b' when the unit covers several
    cells: int
    stage: str = ""
    ok: bool = False
    error: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)


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
            raise UserError(f"--cover {name}: unknown axis{did_you_mean(name, axes)}; "
                            f"axes: {', '.join(axes)}")

    def needs(cell: Cell) -> set:
        single = {((a, str(cell.labels[a])),) for a in axes}
        return single | {tuple((a, str(cell.labels[a])) for a in g) for g in groups}

    wanted, chosen = set().union(*map(needs, cells)), set()
    while wanted:  # greedy set cover; the first cell of the study wins ties
        best = max(range(len(cells)), key=lambda i: len(needs(cells[i]) & wanted))
        chosen.add(best)
        wanted -= needs(cells[best])
    return [c for i, c in enumerate(cells) if i in chosen]


def _child(hook: str, request: dict, log: Path, on_line: Callable[[dict], None]) -> tuple[int, float]:
    """Run `python -m sweeper.run.rehearse HOOK` on `request`; each JSON line it writes goes to
    `on_line`. Returns (exit status as subprocess gives it, the child's peak RSS in MB)."""
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sweeper.run.rehearse", hook], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
        for line in proc.stdout:
            on_line(json.loads(line))
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, even when it was killed
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def _crash(code: int, log: Path) -> str:
    tail = " / ".join(log.read_text(errors="replace").strip().splitlines()[-_TAIL:])
    if code < 0:
        name = signal.Signals(-code).name
        why = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{why}" + (f": {tail}" if tail else "")
    return tail or f"exited with status {code}"


def plan(study: Study, cells: list[Cell], scratch: Path) -> list[dict]:
    """The hook's units for `cells` (each with `cells`: indices into that list)."""
    if not study.rehearse:
        raise UserError(f"{study.file}: rehearse: the study names no rehearsal hook; add e.g. "
                        "'rehearse: model.rehearsal:rehearsal' (a 'module.path:object' with plan and run)")
    found: list[dict] = []
    code, _ = _child(study.rehearse, {"plan": [c.config for c in cells]}, scratch / "plan.log", found.append)
    if code != 0 or not found:
        why = _crash(code, scratch / "plan.log")
        raise UserError(f"{study.file}: rehearse: {study.rehearse} could not plan: {why}")
    return found[-1]["units"]


def rehearse(study: Study, cells: list[Cell], *, steps: int,
             progress: Callable[[int, int, Row], None] | None = None) -> list[Row]:
    """Rehearse `cells` unit by unit (module docstring); one Row per unit, in the hook's order."""
    scratch = Path(tempfile.mkdtemp(prefix="sweeper-rehearse-"))
    try:
        units = plan(study, cells, scratch)
        rows = []
        for n, unit in enumerate(units, 1):
            covered = [cells[i] for i in unit["cells"]]
            labels = {a: "|".join(dict.fromkeys(str(c.labels[a]) for c in covered))
                      for a in study.axis_names if a != SEED_AXIS}
            row = Row(labels, len(covered))
            rows.append(row)
            workdir, log = scratch / f"unit-{n}", scratch / f"unit-{n}.log"
            workdir.mkdir()
            request = {"run": unit, "steps": steps, "workdir": str(workdir),
                       "shared": str(scratch / "shared")}
            started = time.perf_counter()

            def line(event: dict, row: Row = row, n: int = n) -> None:
                if "stage" in event:
                    row.stage = event["stage"]
                    if progress:
                        progress(n, len(units), row)
                else:
                    row.ok, row.error = event["ok"], event.get("error", "")
                    row.figures, row.peak_rss_mb = event.get("figures", {}), event["peak_rss_mb"]

            code, forked_peak = _child(study.rehearse or "", request, log, line)
            row.peak_rss_mb = row.peak_rss_mb or forked_peak
            row.seconds = time.perf_counter() - started
            if code != 0 and not row.error:
                row.ok, row.error = False, _crash(code, log)
            shutil.rmtree(workdir, ignore_errors=True)  # checkpoints of a large model weigh GBs
        return rows
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    from sweeper.run.worker import import_object

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the task prints must not mix with the protocol
    sys.stdout = sys.stderr
    hook = import_object(sys.argv[1])
    request = json.load(sys.stdin)
    if "plan" in request:
        protocol.write(json.dumps({"units": hook.plan(request["plan"])}) + "\n")
        return

    def stage(name: str) -> None:
        protocol.write(json.dumps({"stage": name}) + "\n")

    try:
        figures = hook.run(request["run"], steps=request["steps"], workdir=Path(request["workdir"]),
                           shared=Path(request["shared"]), stage=stage)
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
