"""CLI plumbing shared by every command: consoles, the store option, user-error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sweeper.errors import UserError
from sweeper.spec import load_study
from sweeper.store import Store

out = Console()
err = Console(stderr=True)

CATEGORIES = ("new", "running", "done", "failed", "orphaned")
STYLE = {"new": "cyan", "running": "yellow", "done": "green", "failed": "red", "orphaned": "dim"}


def add_columns(table: Table, columns: Iterable[str], right: Collection[str] = (),
                styles: Mapping[str, str] | None = None) -> Table:
    """Columns whose text folds in a narrow terminal instead of being cut to '…' (an axis name
    or a label must stay readable); right-aligned number columns keep their header's width."""
    for c in columns:
        width = max(map(len, c.split("\n"))) if c in right else None
        table.add_column(c, justify="right" if c in right else "left", overflow="fold", min_width=width,
                         style=(styles or {}).get(c))
    return table


class Options:
    """Global options, set by the app's callback before any command runs."""

    db: str | None = None


def open_store(*, create: bool = True) -> Store:
    """The store of --db / SWEEPER_DB; commands that only read pass create=False, so that a
    mistyped path or a directory without a store is said, not answered from a new empty store."""
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


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def study_name(study: str) -> str:
    """A study is named by its name, or by its file (whose `study:` key is read)."""
    if study.endswith((".yaml", ".yml")) or Path(study).is_file():
        return load_study(study).name
    return study
