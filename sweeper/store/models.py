"""The store's tables (SQLAlchemy ORM): studies, cells, memberships, attempts, metrics, search rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sweeper.states import CellState


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON}
    __table__: ClassVar[Table]  # every model maps one table (bulk inserts use it: Store)


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyRow(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    file: Mapped[str] = mapped_column(Text)
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    workdir: Mapped[str | None] = mapped_column(Text)  # absolute: see Store.workdir


class CellRow(Base):
    __tablename__ = "cells"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    config: Mapped[dict]
    seed: Mapped[int] = mapped_column(Integer)
    # The latest attempt's state, kept beside the history so that plans and reports over
    # thousands of cells are one indexed query.
    state: Mapped[str] = mapped_column(String(16), default=CellState.PLANNED, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Membership(Base):
    """A cell in a study, with the labels that study gives it (the same cell may be in many)."""

    __tablename__ = "study_cells"
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    cell_key: Mapped[str] = mapped_column(ForeignKey("cells.key"), primary_key=True)
    labels: Mapped[dict]
    position: Mapped[int] = mapped_column(Integer)
    orphaned: Mapped[bool] = mapped_column(Boolean, default=False)


class Attempt(Base):
    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_key: Mapped[str] = mapped_column(ForeignKey("cells.key"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(32), index=True)  # the submission that made it
    executor: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str | None] = mapped_column(String(255))
    code_version: Mapped[str | None] = mapped_column(String(64))
    run_dir: Mapped[str | None] = mapped_column(Text)


class Metric(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_key: Mapped[str] = mapped_column(ForeignKey("cells.key"))
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0: not known (v2 stores)
    stage: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    step: Mapped[int | None] = mapped_column(Integer)  # None: the final value
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        Index("ix_metrics_cell_name", "cell_key", "name"),
        # Covers the report's query (final values only), so it never touches the table itself.
        # PostgreSQL's condition is set by use_dialect: naming it here imports that dialect.
        Index("ix_metrics_final", "cell_key", "name", "value", sqlite_where=text("step IS NULL")),
    )


def use_dialect(name: str) -> None:
    """Give the tables the options of the dialect a store uses. A `postgresql_*` option in a
    table's arguments would import SQLAlchemy's PostgreSQL dialect in every command (tens of ms,
    tested in test_layers), SQLite stores included."""
    if name == "postgresql":
        final = next(i for i in Base.metadata.tables["metrics"].indexes if i.name == "ix_metrics_final")
        final.dialect_kwargs["postgresql_where"] = text("step IS NULL")


# Each (cell, attempt, metric, step) once, whatever races (two controllers ingesting one cell):
# NULL steps (final values) are equal here, as they are not in a plain unique constraint.
METRIC_ONCE = (Metric.cell_key, Metric.attempt, Metric.name, func.coalesce(Metric.step, literal_column("-1")))
Index("ux_metrics_once", *METRIC_ONCE, unique=True)


class SearchCell(Base):
    """A cell a search made: a trial (its params and optuna's system attributes), or a final-seed repeat.

    Optuna's state is rebuilt from these rows, the cells' states and their metrics on every
    controller step (sweeper.search), so no optuna storage lives beside the store.
    """

    __tablename__ = "search_cells"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    group_key: Mapped[str] = mapped_column(Text)  # canonical labels of the group's axes
    kind: Mapped[str] = mapped_column(String(8))  # trial | final
    number: Mapped[int] = mapped_column(
        Integer
    )  # the trial's number in its group (final: the trial it repeats)
    cell_key: Mapped[str] = mapped_column(ForeignKey("cells.key"))
    labels: Mapped[dict]
    params: Mapped[dict]
    system_attrs: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("study_id", "group_key", "kind", "number", "cell_key"),)
