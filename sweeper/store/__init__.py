"""The results store: the only part of sweeper that runs SQL.

models: the tables; migrations: schema versions; store: the Store. The states it records and
the sets decided on are sweeper.states (re-exported here), which a worker imports without SQLAlchemy.
"""

from sweeper.states import (
    ACTIVE,
    ALIVE,
    ENDED,
    FINISHED,
    JOB_ENDED_BADLY,
    UNSUCCESSFUL,
    USER_FAULTS,
    Cause,
    CellState,
    SchedulerState,
    category,
)
from sweeper.store.migrations import MIGRATIONS, SCHEMA_VERSION
from sweeper.store.models import (
    Attempt,
    Base,
    CellRow,
    Membership,
    Meta,
    Metric,
    SearchCell,
    StudyRow,
)
from sweeper.store.store import (
    DEFAULT_URL,
    CellView,
    Plan,
    SearchStep,
    Store,
    StudySummary,
    chunks,
    dialect_insert,
    glob_to_like,
    resolve_url,
)

__all__ = [
    "ACTIVE",
    "ALIVE",
    "DEFAULT_URL",
    "ENDED",
    "FINISHED",
    "JOB_ENDED_BADLY",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "UNSUCCESSFUL",
    "USER_FAULTS",
    "Attempt",
    "Base",
    "Cause",
    "CellRow",
    "CellState",
    "CellView",
    "SchedulerState",
    "Membership",
    "Meta",
    "Metric",
    "Plan",
    "SearchCell",
    "SearchStep",
    "Store",
    "StudyRow",
    "StudySummary",
    "category",
    "chunks",
    "dialect_insert",
    "glob_to_like",
    "resolve_url",
]
