"""Submitting cells: launch (new cells), resume (by failure cause), cancel.

Every submission follows the same order so that a controller killed at any point loses and
duplicates nothing: (1) a manifest naming this launch's process, (2) in one transaction the
cells are claimed (only from the states this command may take them from, so a concurrent
launch gets none of them) and an attempt is recorded for each — the intent, (3) the run
directories get the config and the attempt's token, (4) the scheduler call, (5) the job ids.
A worker runs a cell only if the run directory still names its token and it wins the cell's
claim; ingestion adopts the jobs the manifest names, and for a launch that died before naming
them, adopts the cells a worker claimed and voids the claim of the others (which makes them
new again). So a launch killed between (2) and (5) is reconciled by the next `status`,
`launch` or `resume`, and no cell runs twice.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from sweeper.errors import UserError, did_you_mean
from sweeper.ingest import CellStatus, ingest, submissions_dir
from sweeper.run.precheck import precheck
from sweeper.run.rundir import RunDir, write_json
from sweeper.scheduler import Group, backend
from sweeper.store import (
    ACTIVE,
    UNSUCCESSFUL,
    USER_FAULTS,
    Attempt,
    Cause,
    CellState,
    Store,
)
from sweeper.study import Cell, Study, canonical, load_yaml


@dataclass
class Submission:
    token: str | None = None
    keys: list[str] = field(default_factory=list)
    jobs: int = 0  # distinct job ids (an array counts its tasks)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why not submitted


def parse_only(study: Study, only: list[str] | None) -> dict[str, set[str]]:
    """`--only axis=value` filters (repeatable; several values of one axis are alternatives).

    A value is matched as the study file's YAML would read it, by canonical value as cell keys
    are (`1e-3` selects the label 0.001); the filters hold the labels as `str(label)`.
    """
    out: dict[str, set[str]] = defaultdict(set)
    # A search selects groups, whose labels its template cells carry (trials may not exist yet).
    names = study.search.group_axes if study.search else study.axis_names
    labels: dict[str, dict[str, str]] = {name: {} for name in names}  # canonical label -> str(label)
    for cell in study.search.templates.values() if study.search else study.cells:
        for name in labels:
            labels[name][canonical(cell.labels[name])] = str(cell.labels[name])
    for item in only or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--only {item}: expected axis=value, e.g. --only model.scale=base")
        if study.search and name in study.axis_names and name not in names:
            raise UserError(
                f"--only {item}: a search selects its groups ({', '.join(names) or 'none'}); "
                f"'{name}' is searched over, not a group"
            )
        if name not in labels:
            raise UserError(
                f"--only {item}: unknown axis '{name}'{did_you_mean(name, labels)}; axes: {', '.join(labels)}"
            )
        shown = labels[name].values()
        label = value if value in shown else labels[name].get(canonical(_as_yaml(value)))
        if label is None:
            raise UserError(
                f"--only {item}: '{value}' is not a value of {name}; values: {', '.join(sorted(shown))}"
            )
        out[name].add(label)
    return out


def _as_yaml(value: str) -> object:
    """A command-line value as a study file would read it (`1e-3` is a float there)."""
    try:
        return load_yaml(value, "--only")
    except UserError:
        return value


def _selected(cell: Cell, only: dict[str, set[str]]) -> bool:
    return all(str(cell.labels[name]) in values for name, values in only.items())


def _maybe_fault(point: str) -> None:
    """Fault injection for the crash tests: SWEEPER_FAULT=<point> kills this process there."""
    if os.environ.get("SWEEPER_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def submit(
    store: Store,
    study: Study,
    cells: list[Cell],
    *,
    from_states: Collection[str],
    resources: dict[str, dict] | None = None,
) -> Submission:
    """Claim, record intent, write run directories, submit, record job ids (module docstring)."""
    if not cells:
        return Submission()
    workdir = Path(study.workdir).resolve()
    token = secrets.token_hex(6)
    manifest_path = submissions_dir(workdir) / f"{token}.json"
    manifest = {
        "token": token,
        "study": study.name,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.time(),
    }
    write_json(manifest_path, manifest)
    runs = {c.key: RunDir.of(workdir, c.key) for c in cells}
    won = set(
        store.claim(
            [{"key": c.key, "run_dir": str(runs[c.key].path)} for c in cells],
            from_states=from_states,
            token=token,
            executor=study.executor.kind,
        )
    )
    cells = [c for c in cells if c.key in won]
    if not cells:
        return Submission()
    _maybe_fault("after-claim")  # ingestion then voids the claims: no run directory names this launch
    attempts = {a.cell_key: a for a in store.attempts_of(token)}
    for c in cells:
        run = runs[c.key]
        if not run.config.exists():
            write_json(run.config, c.config)
        run.cancel.unlink(missing_ok=True)
        write_json(run.attempt, {"token": token, "number": attempts[c.key].number})
    groups: dict[str, Group] = {}
    for c in cells:
        res = (resources or {}).get(c.key, c.resources)
        groups.setdefault(canonical(res), Group([], res)).keys.append(c.key)
    _maybe_fault("before-submit")
    try:
        ids = backend(study.executor, workdir / "submitit").submit(
            study.task, str(workdir), token, list(groups.values()), name=f"sweeper-{study.name}"
        )
    except Exception as e:  # the scheduler refused: nothing ran; say why and leave the cells as they were
        store.update_attempts(
            [
                {
                    "id": a.id,
                    "cell_key": a.cell_key,
                    "state": CellState.INTERRUPTED,
                    "cause": Cause.NOT_SUBMITTED,
                    "detail": str(e),
                }
                for a in attempts.values()
            ]
        )
        store.reset_cells(list(attempts), CellState.PLANNED)
        raise UserError(f"submission to {study.executor.kind} failed: {e}") from None
    _maybe_fault("before-manifest")  # ingestion then adopts the cells a worker claimed and voids the rest
    write_json(manifest_path, manifest | {"jobs": ids})  # what ingestion adopts if we die before the store
    _maybe_fault("after-submit")
    store.update_attempts(
        [
            {"id": attempts[k].id, "cell_key": k, "state": CellState.PENDING, "job_id": job_id}
            for k, job_id in ids.items()
        ]
    )
    return Submission(token, [c.key for c in cells], len({j for v in ids.values() for j in v.split(",")}))


def launch(
    store: Store,
    study: Study,
    *,
    only: list[str] | None = None,
    max_cells: int | None = None,
    dry_run: bool = False,
) -> tuple[Submission, list[Cell]]:
    """Submit every selected cell that was never submitted; returns (submission, the cells chosen).

    A search first prunes, asks for its free slots and records the new trials (sweeper.search);
    under the debug executor, whose cells run here and now, it goes on until the search is spent.
    Its `check` runs once, on each group's configuration, not on every trial: a check starts
    a process that imports the task's code, seconds a `--wait` poll should not pay.
    """
    if study.search is not None:
        precheck(study, list(study.search.templates.values()))
    result, chosen, progressed, _ = _launch_once(store, study, only, max_cells, dry_run)
    while progressed and study.search is not None and _inline(study) and not dry_run:
        more, _, progressed, _ = _launch_once(store, study, only, max_cells, dry_run)
        result.keys += more.keys
        result.jobs += more.jobs
    return result, chosen


def _launch_once(
    store: Store, study: Study, only: list[str] | None, max_cells: int | None, dry_run: bool
) -> tuple[Submission, list[Cell], bool, list[CellStatus]]:
    """One launch; also says whether it moved anything (a search may ask for a config already done),
    and returns the statuses it decided on."""
    filters = parse_only(study, only)
    if study.search is None:  # before anything is recorded: a refused study leaves no trace
        precheck(study, [c for c in study.cells if _selected(c, filters)])
    statuses = [] if dry_run else ingest(store, study)  # settles earlier launches (incl. killed ones)
    plan = store.plan(study, record=not dry_run)
    grew = False
    if study.search is not None and not dry_run:
        from sweeper.search import grow

        growth = grow(store, study, only=filters)
        grew = bool(growth.asked or growth.finals)
        plan = store.plan(study)  # the new cells, and those another controller recorded meanwhile
        # A search holds `parallel` cells in flight: more would be asked with less evidence.
        free = max(0, study.search.parallel - sum(s in ACTIVE for s in plan.states.values()))
        max_cells = free if max_cells is None else min(max_cells, free)
    chosen = [c for c in study.cells if plan.states[c.key] == CellState.PLANNED and _selected(c, filters)]
    chosen = chosen[:max_cells] if max_cells is not None else chosen
    if dry_run:
        return Submission(), chosen, False, statuses
    result = submit(store, study, chosen, from_states={CellState.PLANNED})
    if _inline(study):  # its cells ran during submit: their results are in
        ingest(store, study)
    return result, chosen, grew or bool(result.keys), statuses


def advance(store: Store, study: Study) -> tuple[list[CellStatus], bool]:
    """One poll of `--wait`: ingest; a search also prunes, asks and submits. Returns (statuses, moved any)."""
    if study.search is None:
        return ingest(store, study), False
    _, _, progressed, statuses = _launch_once(store, study, None, None, False)
    # Unless it moved, report what the step decided on: a cell that ended since is the next step's.
    return (ingest(store, study) if progressed else statuses), progressed


def resume(
    store: Store,
    study: Study,
    *,
    retry_failed: bool = False,
    only: list[str] | None = None,
    max_cells: int | None = None,
) -> Submission:
    """Resubmit interrupted, failed and lost cells by the policy of their cause, with bounded attempts."""
    filters = parse_only(study, only)
    statuses = {s.key: s for s in ingest(store, study)}
    chosen, resources, skipped = [], {}, {}
    for cell in study.cells:
        s = statuses[cell.key]
        if s.state not in UNSUCCESSFUL or not _selected(cell, filters):
            continue
        if s.attempt >= study.retry.max_attempts:
            skipped[cell.key] = f"gave up after {s.attempt} attempts (retry.max_attempts)"
        elif s.cause in USER_FAULTS and not retry_failed:
            skipped[cell.key] = f"{s.cause}: a fault of the task; fix it and pass --retry-failed"
        elif s.cause == Cause.OUT_OF_MEMORY:
            factor = study.retry.oom_memory_factor
            if factor is None or "mem_gb" not in cell.resources:
                skipped[cell.key] = (
                    "OUT_OF_MEMORY: set retry.oom_memory_factor (and resources mem_gb) to retry with more"
                )
            else:
                ooms = sum(a.cause == Cause.OUT_OF_MEMORY for a in store.attempts(cell.key))
                resources[cell.key] = cell.resources | {
                    "mem_gb": round(cell.resources["mem_gb"] * factor**ooms, 1)
                }
                chosen.append(cell)
        else:
            chosen.append(cell)
    chosen = chosen[:max_cells] if max_cells is not None else chosen
    if study.search is None:  # a search's launch (below) checks its groups
        precheck(study, chosen)
    result = submit(store, study, chosen, from_states=UNSUCCESSFUL, resources=resources)
    result.skipped = skipped
    if _inline(study):  # its cells ran during submit: their results are in
        ingest(store, study)
    if study.search is not None:  # and the search goes on where it stopped
        more, _ = launch(store, study, only=only)
        result.keys += more.keys
        result.jobs += more.jobs
    return result


def cancel(store: Store, study: Study, *, only: list[str] | None = None) -> list[str]:
    """Cancel exactly the selected cells that are submitted or running; returns their keys.

    Each gets a `cancel` file: a job that has not reached it skips it, and the worker running it asks
    the task to save and stop, then goes on with its job's other cells (a local lane set, a SLURM pack).
    Only a job whose every active cell is selected is cancelled through the scheduler.
    """
    filters = parse_only(study, only)
    statuses = ingest(store, study)
    keys = {c.key for c in study.cells if _selected(c, filters)}
    targets = [s for s in statuses if s.key in keys and s.state in ACTIVE]
    if not targets:
        return []
    workdir = Path(study.workdir).resolve()
    latest = store.latest_attempts([s.key for s in targets])
    for s in targets:
        RunDir.of(workdir, s.key).cancel.touch()
    backend(study.executor, workdir / "submitit").cancel(_whole_jobs(store, [latest[s.key] for s in targets]))
    store.update_attempts(
        [
            {
                "id": latest[s.key].id,
                "cell_key": s.key,
                "state": CellState.CANCELLED,
                "cause": Cause.CANCELLED,
                "detail": "cancelled by sweeper cancel",
            }
            for s in targets
        ]
    )
    return [s.key for s in targets]


def _whole_jobs(store: Store, targets: list[Attempt]) -> list[str]:
    """The job ids all of whose active cells are targets (a job runs cells of one submission only)."""
    chosen = {a.cell_key for a in targets}
    shared = {
        a.job_id
        for token in {a.token for a in targets}
        for a in store.attempts_of(token)
        if a.state in ACTIVE and a.cell_key not in chosen
    }
    return sorted({a.job_id for a in targets if a.job_id} - shared)


def _inline(study: Study) -> bool:
    return backend(study.executor, Path(study.workdir).resolve() / "submitit").inline
