"""Schema versions and the migrations between them.

Why not alembic: the schema has four versions and three one-statement upgrades, run inside
the transaction that holds the version row's lock (so that one of several processes opening
an old store migrates and the others wait). Alembic would add a migration environment, a
script directory shipped in the package and its own version table beside `meta`, for the
same statements; it is worth its weight once migrations need autogeneration or downgrades.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session

from sweeper.store.models import Metric

SCHEMA_VERSION = 4


def _metrics_once(s: Session) -> None:
    """v3: metrics know their attempt (older rows: the cell's last) and are unique; duplicates
    (re-ingested, or reported again after a resume) keep the last recorded, as reports did."""
    s.execute(text("ALTER TABLE metrics ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0"))
    s.execute(
        text(
            "UPDATE metrics SET attempt = COALESCE((SELECT MAX(a.number) FROM attempts a "
            "WHERE a.cell_key = metrics.cell_key), 0)"
        )
    )
    s.execute(
        text(
            "DELETE FROM metrics WHERE id NOT IN (SELECT MAX(id) FROM metrics "
            "GROUP BY cell_key, attempt, name, COALESCE(step, -1))"
        )
    )
    next(i for i in Metric.__table__.indexes if i.name == "ux_metrics_once").create(s.connection())


def _execute(s: Session, statement: str) -> None:
    s.execute(text(statement))


# Ordered migrations: MIGRATIONS[v] upgrades a schema at version v to v + 1.
MIGRATIONS: dict[int, Callable[[Session], None]] = {
    1: lambda s: None,  # v2 adds search_cells, which create_all has made by then
    2: _metrics_once,
    3: lambda s: _execute(s, "ALTER TABLE studies ADD COLUMN workdir TEXT"),  # v4: the run directory
}
