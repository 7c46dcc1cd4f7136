"""CLI plumbing shared by every command: the store option, user-error handling, the plan's colours."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import typer

from sweeper.errors import UserError
from sweeper.report.console import err

if TYPE_CHECKING:
    from sweeper.store import Store

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
