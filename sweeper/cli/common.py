"""CLI plumbing shared by the commands: the store option, user-error handling, the plan's colours,
the options several commands take and the study a name or a file gives."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sweeper.errors import UserError
from sweeper.report.console import err

if TYPE_CHECKING:
    from sweeper.store import Store
    from sweeper.study import Study

OnlyOption = Annotated[
    list[str] | None, typer.Option("--only", help="Only cells with axis=value (repeatable).")
]
MaxCellsOption = Annotated[
    int | None, typer.Option("--max-cells", min=1, help="Submit at most this many cells.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StudyArgument = Annotated[str, typer.Argument(help="Study name or YAML file.", show_default=False)]

CATEGORIES = ("new", "running", "done", "failed", "orphaned")
STYLE = {"new": "cyan", "running": "yellow", "done": "green", "failed": "red", "orphaned": "dim"}


class Options:
    """Global options, set by the app's callback before any command runs."""

    db: str | None = None


def open_store(*, create: bool = True) -> Store:
    """The store of --db / SWEEPER_DB; commands that only read pass create=False, so that a
    mistyped path or a directory without a store is said, not answered from a new empty store."""
    from sweeper.store import Store

    return Store(Options.db, create=create)


def user_errors(fn: Callable) -> Callable:
    """User errors become one red message and exit code 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def study_spec(study: str) -> Study:
    """The study as its file says (a name is looked up in the store's record of the file)."""
    from sweeper.study import is_study_file, load_study, parse_study

    if is_study_file(study):
        return load_study(study)
    with open_store(create=False) as store:
        row = store.study_row(study)
    return parse_study(row.spec_text, row.file)
