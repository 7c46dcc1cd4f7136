"""The results store: an index of studies, cells, attempts and metrics over SQLAlchemy.

Only the CLI process writes it (compute nodes write files in their run directories), so
SQLite in WAL mode is safe; any SQLAlchemy URL (PostgreSQL included) works the same.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path

from sqlalchemy import (
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from sweeper.errors import UserError, did_you_mean
from sweeper.states import CellState, category
from sweeper.store.migrations import MIGRATIONS, SCHEMA_VERSION
from sweeper.store.models import (
    METRIC_ONCE,
    Attempt,
    Base,
    CellRow,
    Membership,
    Meta,
    Metric,
    SearchCell,
    StudyRow,
    use_dialect,
    utcnow,
)
from sweeper.study import Cell, Study

DEFAULT_URL = "sqlite:///results.db"
_CHUNK = 5000  # bound on IN-list size (SQLite's variable limit)


def _workdir(recorded: str | None, setting: str) -> str:
    """The recorded run directory while the file's `workdir:` still names it; else `setting` resolved here."""
    parts, known = Path(setting).parts, Path(recorded or "").parts
    if recorded and not Path(setting).is_absolute() and known[len(known) - len(parts) :] == parts:
        return recorded
    return str(Path(setting).resolve())


@dataclass
class Plan:
    """What recording a study changed, and what a launch would do with each of its cells."""

    study: str
    added: list[str] = field(default_factory=list)  # cells new to this study
    kept: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)  # in the store, no longer in the file
    states: dict[str, str] = field(default_factory=dict)  # cell key -> state, for the file's cells
    per_axis: dict[str, dict[str, Counter]] = field(default_factory=dict)  # axis -> label -> category counts

    def counts(self) -> Counter:
        c = Counter(category(s) for s in self.states.values())
        c["orphaned"] = len(self.orphaned)
        return c


@dataclass(frozen=True)
class StudySummary:
    name: str
    file: str
    created_at: datetime
    updated_at: datetime
    cells: int
    states: dict[str, int]


@dataclass(frozen=True)
class CellView:
    key: str
    labels: dict
    seed: int
    state: str
    orphaned: bool
    config: dict


def resolve_url(url: str | None = None) -> str:
    """A URL as given, or a plain file path (no `scheme://`) as a SQLite file."""
    url = url or os.environ.get("SWEEPER_DB") or DEFAULT_URL
    return url if "://" in url else f"sqlite:///{Path(url).expanduser()}"


class Store:
    """Open (creating or migrating) the store at `url`; default SWEEPER_DB or sqlite:///results.db.

    With create=False (the read-only commands) a missing store is a UserError, not a new empty one.
    """

    def __init__(self, url: str | None = None, *, echo: bool = False, create: bool = True):
        self.url = resolve_url(url)
        try:
            self.engine = create_engine(self.url, echo=echo, connect_args=_connect_args(self.url))
        except (ArgumentError, NoSuchModuleError, ImportError) as e:
            raise UserError(f"--db {self.url}: not a usable database URL ({e})") from None
        use_dialect(self.engine.dialect.name)
        if not create:
            self._require_existing()
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Take the write lock when a transaction begins: two launches then queue (busy
            # timeout) instead of failing to upgrade a read lock ("database is locked").
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        try:
            self._prepare_schema()
        except OperationalError as e:
            raise UserError(f"--db {self.url}: cannot open the results store: {e.orig}") from None

    def _require_existing(self) -> None:
        """Connecting to a missing SQLite file would create it: look for the file, then the schema."""
        path = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        missing = path is not None and path not in ("", ":memory:") and not Path(path).exists()
        try:
            missing = missing or not inspect(self.engine).has_table(Meta.__tablename__)
        except OperationalError as e:
            raise UserError(f"--db {self.url}: cannot open the results store: {e.orig}") from None
        if missing:
            self.engine.dispose()
            where = Path(path).resolve() if path and path != ":memory:" else self.url
            raise UserError(
                f"no results store at {where}: nothing has been recorded there yet; record a "
                "study with `sweeper plan STUDY.yaml`, or name the store with --db or SWEEPER_DB"
            )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _prepare_schema(self) -> None:
        for tries_left in (2, 1, 0):  # another process may be creating the same schema right now
            try:
                Base.metadata.create_all(self.engine)
                break
            except (OperationalError, ProgrammingError, IntegrityError):
                if not tries_left:
                    raise
                time.sleep(0.2)
        with self.session() as s, s.begin():
            s.execute(
                dialect_insert(s, Meta)
                .values(key="schema_version", value=str(SCHEMA_VERSION))
                .on_conflict_do_nothing()
            )
            row = s.get_one(Meta, "schema_version", with_for_update=True)  # one process migrates; others wait
            version = int(row.value)
            if version > SCHEMA_VERSION:
                raise UserError(
                    f"{self.url}: written by a newer sweeper (schema v{version}, this one knows "
                    f"v{SCHEMA_VERSION}); upgrade sweeper"
                )
            while version < SCHEMA_VERSION:
                MIGRATIONS[version](s)
                version += 1
            row.value = str(version)

    @property
    def schema_version(self) -> int:
        with self.session() as s:
            return int(s.get_one(Meta, "schema_version").value)

    # ------------------------------------------------------------------ planning

    def plan(self, study: Study, *, record: bool = True) -> Plan:
        """Diff a study against the store; with record, upsert the study and its cells in one transaction."""
        keys = [c.key for c in study.cells]
        with self.session() as s, s.begin():
            row = s.scalar(select(StudyRow).where(StudyRow.name == study.name))
            states = dict(self._states(s, keys))
            members = (
                {}
                if row is None
                else {
                    key: (orphaned, labels, pos)
                    for key, orphaned, labels, pos in s.execute(
                        select(
                            Membership.cell_key, Membership.orphaned, Membership.labels, Membership.position
                        ).where(Membership.study_id == row.id)
                    )
                }
            )
            in_file = set(keys)
            plan = Plan(study.name)
            plan.added = [k for k in keys if k not in members]
            plan.kept = [k for k in keys if k in members]
            plan.orphaned = [k for k in members if k not in in_file]
            plan.states = {k: states.get(k, CellState.PLANNED) for k in keys}
            if record:
                self._record(s, study, row, states, members, plan)
        plan.per_axis = _per_axis(study, plan.states)
        return plan

    def _record(self, s: Session, study: Study, row: StudyRow | None, states, members, plan: Plan) -> None:
        now = utcnow()
        file = str(Path(study.file).resolve()) if Path(study.file).is_file() else study.file
        if row is None:
            s.execute(
                dialect_insert(s, StudyRow)
                .values(
                    name=study.name,
                    file=file,
                    spec_text=study.text,
                    spec_hash=study.spec_hash,
                    created_at=now,
                )
                .on_conflict_do_nothing()
            )
            row = s.scalars(select(StudyRow).where(StudyRow.name == study.name)).one()
        elif row.spec_hash != study.spec_hash or row.file != file:
            row.spec_text, row.spec_hash, row.file = study.text, study.spec_hash, file
        row.workdir = _workdir(row.workdir, study.workdir)
        row.updated_at = now
        new_cells = [
            {
                "key": c.key,
                "task": study.task,
                "config": c.config,
                "seed": c.seed,
                "state": CellState.PLANNED,
                "created_at": now,
            }
            for c in study.cells
            if c.key not in states
        ]
        if new_cells:  # another study's plan may be adding the same cells right now (PostgreSQL)
            s.execute(dialect_insert(s, CellRow).on_conflict_do_nothing(), new_cells)
        position = {c.key: i for i, c in enumerate(study.cells)}
        added = set(plan.added)
        new_members = [
            {
                "study_id": row.id,
                "cell_key": c.key,
                "labels": c.labels,
                "position": position[c.key],
                "orphaned": False,
            }
            for c in study.cells
            if c.key in added
        ]
        if new_members:
            s.execute(dialect_insert(s, Membership).on_conflict_do_nothing(), new_members)
        revived = [k for k in plan.kept if members[k][0]]
        for keys, orphaned in ((plan.orphaned, True), (revived, False)):
            for chunk in chunks(keys):
                s.execute(
                    update(Membership)
                    .where(Membership.study_id == row.id, Membership.cell_key.in_(chunk))
                    .values(orphaned=orphaned)
                )
        # Kept cells follow the file: labels (an axis may be renamed) and order.
        changed = [
            {"study_id": row.id, "cell_key": c.key, "labels": c.labels, "position": position[c.key]}
            for c in study.cells
            if c.key in members and members[c.key][1:] != (c.labels, position[c.key])
        ]
        if changed:
            s.execute(update(Membership), changed)

    @staticmethod
    def _states(s: Session, keys: list[str]) -> Iterator[tuple[str, str]]:
        for chunk in chunks(keys):
            yield from s.execute(select(CellRow.key, CellRow.state).where(CellRow.key.in_(chunk))).all()

    # ------------------------------------------------------------------ reading

    def studies(self) -> list[StudySummary]:
        with self.session() as s:
            counts: dict[int, Counter] = defaultdict(Counter)
            q = (
                select(Membership.study_id, CellRow.state, func.count())
                .join(CellRow, CellRow.key == Membership.cell_key)
                .where(Membership.orphaned.is_(False))
                .group_by(Membership.study_id, CellRow.state)
            )
            for study_id, state, n in s.execute(q):
                counts[study_id][state] = n
            return [
                StudySummary(
                    r.name, r.file, r.created_at, r.updated_at, sum(counts[r.id].values()), dict(counts[r.id])
                )
                for r in s.scalars(select(StudyRow).order_by(StudyRow.name))
            ]

    def study_row(self, name: str) -> StudyRow:
        with self.session() as s:
            row = s.scalar(select(StudyRow).where(StudyRow.name == name))
        if row is None:
            known = [st.name for st in self.studies()]
            raise UserError(
                f"no study named '{name}' in {self.url}{did_you_mean(name, known)}; known: "
                f"{', '.join(known) or 'none'}"
            )
        return row

    def workdir(self, study: Study) -> str:
        """The study's run directory, absolute, as recorded: a relative `workdir:` is resolved once,
        where the study was first recorded, so that every later command uses it from any directory."""
        with self.session() as s:
            recorded = s.scalar(select(StudyRow.workdir).where(StudyRow.name == study.name))
        return _workdir(recorded, study.workdir)

    def resolve_key(self, prefix: str) -> str:
        """A full cell key from a unique prefix of it."""
        with self.session() as s:
            keys = list(
                s.scalars(select(CellRow.key).where(CellRow.key.startswith(prefix, autoescape=True)).limit(2))
            )
        if len(keys) != 1:
            raise UserError(
                f"cell '{prefix}': {'no cell has' if not keys else 'several cells have'} this key (prefix)"
            )
        return keys[0]

    def cells(self, study: str, *, include_orphaned: bool = True) -> list[CellView]:
        row = self.study_row(study)
        with self.session() as s:
            q = (
                select(
                    CellRow.key,
                    Membership.labels,
                    CellRow.seed,
                    CellRow.state,
                    Membership.orphaned,
                    CellRow.config,
                )
                .join(Membership, Membership.cell_key == CellRow.key)
                .where(Membership.study_id == row.id)
                .order_by(Membership.orphaned, Membership.position)
            )
            if not include_orphaned:
                q = q.where(Membership.orphaned.is_(False))
            return [CellView(*r) for r in s.execute(q)]

    # ------------------------------------------------------------------ attempts and metrics

    def claim(self, cells: list[dict], *, from_states: Iterable[str], token: str, executor: str) -> list[str]:
        """Atomically move cells from `from_states` to SUBMITTING and record an attempt for each.

        `cells` are {"key", "run_dir"} dicts. Returns the keys this call won: a concurrent
        launch of the same cells gets none of them, so nothing is submitted twice.
        """
        allowed = list(from_states)
        won: list[str] = []
        now = utcnow()
        with self.session() as s, s.begin():
            for chunk in chunks([c["key"] for c in cells]):
                won.extend(
                    s.scalars(
                        update(CellRow)
                        .where(CellRow.key.in_(chunk), CellRow.state.in_(allowed))
                        .values(state=CellState.SUBMITTING)
                        .returning(CellRow.key)
                    )
                )
            if not won:
                return []
            numbers = self._max_numbers(s, won)
            run_dirs = {c["key"]: c["run_dir"] for c in cells}
            s.execute(
                insert(Attempt.__table__),
                [
                    {
                        "cell_key": k,
                        "number": numbers.get(k, 0) + 1,
                        "token": token,
                        "executor": executor,
                        "state": CellState.SUBMITTING,
                        "submitted_at": now,
                        "run_dir": run_dirs[k],
                    }
                    for k in won
                ],
            )
        return won

    @staticmethod
    def _max_numbers(s: Session, keys: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for chunk in chunks(keys):
            out.update(
                s.execute(
                    select(Attempt.cell_key, func.max(Attempt.number))
                    .where(Attempt.cell_key.in_(chunk))
                    .group_by(Attempt.cell_key)
                ).all()
            )
        return out

    def attempts_of(self, token: str) -> list[Attempt]:
        with self.session() as s:
            return list(s.scalars(select(Attempt).where(Attempt.token == token)))

    def latest_attempts(self, keys: list[str]) -> dict[str, Attempt]:
        """The newest attempt of each cell that has one."""
        out: dict[str, Attempt] = {}
        with self.session() as s:
            for chunk in chunks(keys):
                for a in s.scalars(
                    select(Attempt).where(Attempt.cell_key.in_(chunk)).order_by(Attempt.number)
                ):
                    out[a.cell_key] = a
        return out

    def update_attempts(self, changes: list[dict]) -> None:
        """Bulk-change attempts ({"id", field: value…}); a new state is mirrored on the cell."""
        if not changes:
            return
        with self.session() as s, s.begin():
            s.execute(update(Attempt), changes)
            cell_states = [{"key": c["cell_key"], "state": c["state"]} for c in changes if "state" in c]
            if cell_states:
                s.execute(update(CellRow), cell_states)

    def add_attempt(
        self,
        cell_key: str,
        *,
        executor: str,
        state: str = CellState.SUBMITTING,
        token: str = "manual",
        **fields,
    ) -> int:
        """Record one attempt (its number follows the cell's last) and move the cell to its state."""
        with self.session() as s, s.begin():
            number = (s.scalar(select(func.max(Attempt.number)).where(Attempt.cell_key == cell_key)) or 0) + 1
            attempt = Attempt(
                cell_key=cell_key, number=number, executor=executor, state=state, token=token, **fields
            )
            s.add(attempt)
            s.execute(update(CellRow).where(CellRow.key == cell_key).values(state=state))
            s.flush()
            return attempt.id

    def update_attempt(self, attempt_id: int, **fields) -> None:
        """Change an attempt; a new state is mirrored on its cell."""
        with self.session() as s, s.begin():
            attempt = s.get_one(Attempt, attempt_id)
            for k, v in fields.items():
                setattr(attempt, k, v)
            if "state" in fields:
                s.execute(
                    update(CellRow).where(CellRow.key == attempt.cell_key).values(state=fields["state"])
                )

    def reset_cells(self, keys: list[str], state: str = CellState.PLANNED) -> None:
        with self.session() as s, s.begin():
            for chunk in chunks(keys):
                s.execute(update(CellRow).where(CellRow.key.in_(chunk)).values(state=state))

    def attempts(self, cell_key: str) -> list[Attempt]:
        with self.session() as s:
            return list(
                s.scalars(select(Attempt).where(Attempt.cell_key == cell_key).order_by(Attempt.number))
            )

    def attempts_of_cells(self, keys: list[str]) -> dict[str, list[Attempt]]:
        """Every attempt of each of the cells that has one, in order."""
        out: dict[str, list[Attempt]] = defaultdict(list)
        with self.session() as s:
            for chunk in chunks(keys):
                q = select(Attempt).where(Attempt.cell_key.in_(chunk)).order_by(Attempt.number)
                for a in s.scalars(q):
                    out[a.cell_key].append(a)
        return dict(out)

    def add_metrics(
        self, cell_key: str, stage: str, values: dict[str, float], step: int | None = None, attempt: int = 0
    ) -> None:
        self.add_metric_rows(
            [
                {
                    "cell_key": cell_key,
                    "attempt": attempt,
                    "stage": stage,
                    "name": n,
                    "step": step,
                    "value": float(v),
                }
                for n, v in values.items()
            ]
        )

    def add_metric_rows(self, rows: list[dict]) -> None:
        """Bulk upsert of {cell_key, attempt, stage, name, step, value} rows (stored again: replaced)."""
        if rows:
            with self.session() as s, s.begin():
                stmt = dialect_insert(s, Metric)
                s.execute(
                    stmt.on_conflict_do_update(
                        index_elements=METRIC_ONCE,
                        set_={"stage": stmt.excluded.stage, "value": stmt.excluded.value},
                    ),
                    rows,
                )

    def replace_metrics(self, keys: list[str], rows: list[dict]) -> None:
        """Make `rows` the metrics of cells `keys` (what their run directories hold now), in one transaction.

        Safe against another controller doing the same at once: the unique index and
        ON CONFLICT DO NOTHING store each (cell, attempt, metric, step) once, and both lock the
        cells in key order (PostgreSQL), so neither waits on the other in a cycle.
        """
        if not keys:
            return
        rows = sorted(rows, key=itemgetter("cell_key"))
        with self.session() as s, s.begin():
            for chunk in chunks(sorted(keys)):
                s.execute(delete(Metric).where(Metric.cell_key.in_(chunk)))
            for i in range(0, len(rows), _CHUNK):
                s.execute(dialect_insert(s, Metric).on_conflict_do_nothing(), rows[i : i + _CHUNK])

    def restore_attempts(self, attempts: dict[str, list[dict]]) -> None:
        """Replace the attempts of cells (key -> attempts rebuilt from its run directory, in order) in
        one transaction; each cell takes its last attempt's state."""
        keys = list(attempts)
        with self.session() as s, s.begin():
            for chunk in chunks(keys):
                s.execute(delete(Attempt).where(Attempt.cell_key.in_(chunk)))
            rows = [a | {"cell_key": key} for key, cell in attempts.items() for a in cell]
            for i in range(0, len(rows), _CHUNK):
                s.execute(insert(Attempt.__table__), rows[i : i + _CHUNK])
            states = [
                {"key": k, "state": cell[-1]["state"] if cell else CellState.PLANNED}
                for k, cell in attempts.items()
            ]
            if states:
                s.execute(update(CellRow), states)

    def metrics(self, cell_key: str, *, final_only: bool = True) -> dict[str, float]:
        """The cell's metric values by name (the last recorded wins)."""
        with self.session() as s:
            q = select(Metric.name, Metric.value).where(Metric.cell_key == cell_key).order_by(Metric.id)
            if final_only:
                q = q.where(Metric.step.is_(None))
            return dict(s.execute(q).all())

    # ------------------------------------------------------------------ report reads

    def members(self, study_id: int) -> list[tuple[int, str, str, str]]:
        """(position, cell key, labels as JSON text, state) of the study's live cells, in file order.

        The labels stay JSON text so that a caller parses them in one call: 30,000 json.loads
        cost more than the query.
        """
        q = (
            select(Membership.position, Membership.cell_key, cast(Membership.labels, Text), CellRow.state)
            .join(CellRow, CellRow.key == Membership.cell_key)
            .where(*_live(study_id))
            .order_by(Membership.position)
        )
        with self.engine.connect() as conn:
            return [(position, key, labels, state) for position, key, labels, state in conn.execute(q)]

    def metric_values(
        self,
        study_id: int,
        patterns: Sequence[str] | None = None,
        *,
        final: bool = True,
        analysis: bool = True,
        ordered: bool = False,
    ) -> list[tuple]:
        """The live cells' metric values as plain tuples: (position, name, value) of the final values
        (step IS NULL), or with final=False (position, attempt, name, step, value) of those reported
        per step.

        `patterns` are globs over the names, pushed into SQL as LIKE filters (a superset: the
        caller matches the globs exactly); without them every metric, but analysis.* unless
        `analysis`. `ordered`: in the order they were recorded (the last of duplicates wins).
        """
        q: Select
        if final:
            q = select(Membership.position, Metric.name, Metric.value).where(Metric.step.is_(None))
        else:
            q = select(Membership.position, Metric.attempt, Metric.name, Metric.step, Metric.value).where(
                Metric.step.is_not(None)
            )
        q = q.join(Metric, Metric.cell_key == Membership.cell_key).where(*_live(study_id))
        if patterns:
            q = q.where(or_(*(Metric.name.like(glob_to_like(p), escape="\\") for p in patterns)))
        elif not analysis:
            q = q.where(not_(Metric.name.like("analysis.%")))
        if ordered:
            q = q.order_by(Metric.id)
        with self.engine.connect() as conn:
            return _fetch_plain(conn, q)

    def metric_names(self, study_id: int, *, final: bool = True) -> list[str]:
        """The distinct names of the study's final metrics (or, final=False, of those reported per step)."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Metric.name)
                    .distinct()
                    .join(Membership, Membership.cell_key == Metric.cell_key)
                    .where(
                        Membership.study_id == study_id,
                        Metric.step.is_(None) if final else Metric.step.is_not(None),
                    )
                    .order_by(Metric.name)
                )
            )

    def step_counts(self, study_id: int, sample: int = 20) -> dict[str, int]:
        """Per metric reported per step, the most steps one of the first `sample` reporting cells reported."""
        with self.session() as s:
            cells = (
                select(Membership.cell_key)
                .join(Metric, Metric.cell_key == Membership.cell_key)
                .where(*_live(study_id), Metric.step.is_not(None))
                .distinct()
                .limit(sample)
                .subquery()
            )
            per_cell = (
                select(Metric.cell_key, Metric.name, func.count(func.distinct(Metric.step)).label("n"))
                .where(Metric.cell_key.in_(select(cells.c.cell_key)), Metric.step.is_not(None))
                .group_by(Metric.cell_key, Metric.name)
                .subquery()
            )
            rows = s.execute(select(per_cell.c.name, func.max(per_cell.c.n)).group_by(per_cell.c.name))
            return dict(rows.all())

    # ------------------------------------------------------------------ search rows

    def attach(self, study: Study) -> Study:
        """Give a search study its cells: the trials and final repeats recorded for its current groups.

        A search study's file names its groups, not its cells; the searches make those, and the
        store holds them. A study without a search is returned as it is.
        """
        plan = study.search
        if plan is None:
            return study
        with self.session() as s:
            study_id = s.scalar(select(StudyRow.id).where(StudyRow.name == study.name))
            rows = (
                []
                if study_id is None
                else s.execute(
                    select(
                        SearchCell.cell_key,
                        SearchCell.labels,
                        SearchCell.group_key,
                        CellRow.config,
                        CellRow.seed,
                    )
                    .join(CellRow, CellRow.key == SearchCell.cell_key)
                    .where(SearchCell.study_id == study_id)
                    .order_by(SearchCell.id)
                ).all()
            )
        cells: dict[str, Cell] = {}
        for key, labels, group, config, seed in rows:
            template = plan.template(labels)
            if group in plan.groups and template is not None and key not in cells:
                cells[key] = Cell(key, config, labels, seed, template.resources)
        study.cells = list(cells.values())
        return study

    @contextmanager
    def search_step(self, study: str, *, lock: bool = True) -> Iterator[SearchStep]:
        """One transaction over a search's rows; with `lock`, holding the study's lock (one controller
        step at a time), and committed when the block ends without an exception."""
        with self.session() as s:
            if lock:
                with s.begin():  # SQLite: the transaction began IMMEDIATE
                    study_id = s.scalar(select(StudyRow.id).where(StudyRow.name == study).with_for_update())
                    yield SearchStep(s, study_id)
            else:
                yield SearchStep(s, s.scalar(select(StudyRow.id).where(StudyRow.name == study)))


class SearchStep:
    """The reads and writes of one search-controller step, inside Store.search_step's transaction."""

    def __init__(self, s: Session, study_id: int | None):
        self._s, self.study_id = s, study_id

    def rows(self) -> list[SearchCell]:
        """The study's search rows (trials and final repeats), in the order they were recorded."""
        q = select(SearchCell).where(SearchCell.study_id == self.study_id).order_by(SearchCell.id)
        return list(self._s.scalars(q))

    def states(self, keys: list[str]) -> dict[str, str]:
        return dict(Store._states(self._s, keys))

    def metrics(self, keys: list[str], names: Iterable[str]) -> Iterator[tuple[str, str, int | None, float]]:
        """(cell key, name, step, value) of the cells' metrics named `names`, in the order recorded."""
        for chunk in chunks(keys):
            yield from self._s.execute(
                select(Metric.cell_key, Metric.name, Metric.step, Metric.value)
                .where(Metric.cell_key.in_(chunk), Metric.name.in_(set(names)))
                .order_by(Metric.id)
            )

    def cell(self, key: str) -> CellRow | None:
        return self._s.get(CellRow, key)

    def set_system_attrs(self, row_id: int, attrs: dict) -> None:
        self._s.execute(update(SearchCell).where(SearchCell.id == row_id).values(system_attrs=attrs))

    def record(self, cells: list[dict], rows: list[dict]) -> None:
        """Insert cells (once: a config asked twice is one cell) and the search rows that name them."""
        if cells:
            self._s.execute(dialect_insert(self._s, CellRow).on_conflict_do_nothing(), cells)
        if rows:
            self._s.execute(
                dialect_insert(self._s, SearchCell).on_conflict_do_nothing(),
                [row | {"study_id": self.study_id} for row in rows],
            )


def _live(study_id: int) -> tuple:
    return Membership.study_id == study_id, Membership.orphaned.is_(False)


def _fetch_plain(conn: Connection, q: Select) -> list[tuple]:
    """The DBAPI cursor's plain tuples: building 900k Row objects would double a report's load time."""
    result = conn.execute(q)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _per_axis(study: Study, states: dict[str, str]) -> dict[str, dict[str, Counter]]:
    out: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in study.axis_names}
    for cell in study.cells:
        cat = category(states[cell.key])
        for name in study.axis_names:
            out[name][str(cell.labels[name])][cat] += 1
    return {name: dict(labels) for name, labels in out.items()}


def dialect_insert(s: Session, table: type[Base]):
    """INSERT with the dialect's ON CONFLICT support (SQLite and PostgreSQL share the API).

    Built on the Core table, not the ORM entity: the ORM's bulk path inspects every row in Python
    and took 40 % of ingesting 10,000 cells' metrics (benchmarks/orchestrator.py)."""
    dialect = s.get_bind().dialect.name
    # Each dialect's module is imported when a store of that kind writes (a read-only command never does).
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table.__table__)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table.__table__)
    raise UserError(f"the results store supports SQLite and PostgreSQL, not {dialect}")


def chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def glob_to_like(pattern: str) -> str:
    """A SQL LIKE pattern (escape '\\') matching a superset of what the glob matches."""
    out_: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out_.append("%")
        elif c == "?":
            out_.append("_")
        elif c == "[":
            j = i + 1
            j += pattern[j : j + 1] == "!"
            j += pattern[j : j + 1] == "]"
            j = pattern.find("]", j)
            if j == -1:
                out_.append("[")
            else:
                out_.append("_")
                i = j
        elif c in "%_\\":
            out_.append("\\" + c)
        else:
            out_.append(c)
        i += 1
    return "".join(out_)


def _connect_args(url: str) -> dict:
    return {"timeout": 30} if url.startswith("sqlite") else {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
