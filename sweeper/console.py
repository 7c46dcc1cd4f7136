"""CLI plumbing shared by every command: consoles, the store option, user-error handling."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from copy import copy
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Column, Table

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


def table_width(table: Table, console: Console) -> int:
    """The width a table takes when nothing is folded or cut (rich measures columns, not titles)."""
    return Measurement.get(console, console.options.update_width(1 << 20), table).maximum


def print_table(table: Table, console: Console = out, *, keep: int | None = None) -> None:
    """Print a table whole: a report never loses a column or a value to the console's width.

    Outside a terminal (a pipe, a file) it is printed at its full width, however wide. In a
    terminal too narrow for it, it is split into several tables, each repeating the first `keep`
    columns (default: the leading left-aligned ones, the row labels), and says so. The caption is
    printed below as plain lines (wrapped in a terminal, never outside one), not folded into the
    table's width.
    """
    caption = str(table.caption or "")
    if keep is None:
        keep = next((i for i, c in enumerate(table.columns) if c.justify == "right"), len(table.columns))
    body = copy(table)
    body.caption = None
    parts = [body]
    if not console.is_terminal:
        width = max(table_width(body, console), console.width)
        console = Console(file=console.file, width=width, color_system=None, force_terminal=False)
    elif len(table.columns) > keep + 1:
        parts = _split(body, console, keep)
        if len(parts) > 1:
            caption = (f"split into {len(parts)} tables to fit this terminal's {console.width} columns "
                       "(a pipe or --out FILE prints one)\n" + caption).rstrip("\n")
    for part in parts:
        console.print(part)
    for line in caption.splitlines():
        console.print(line, markup=False, highlight=False, soft_wrap=not console.is_terminal)


def print_all(group: Group) -> None:
    """A view of text and tables, each table printed whole (print_table)."""
    for part in group.renderables:
        if isinstance(part, Table):
            print_table(part)
        else:
            out.print(part)


def _split(table: Table, console: Console, keep: int) -> list[Table]:
    """Tables of the first `keep` columns and as many of the next ones as fit the console's width
    (the table itself when it fits)."""
    head, rest = table.columns[:keep], table.columns[keep:]

    def part(columns: list[Column], title: Any) -> Table:
        t = copy(table)
        t.title = title
        t.columns = [replace(c, _index=i) for i, c in enumerate(columns)]
        return t

    # Each column is measured once, alone: a table's width is one border plus each column's
    # width alone less the border it shares (measuring every candidate part costs 4x more).
    base = table_width(part(head, None), console) if head else 1
    chunks: list[list[Column]] = [[]]
    width = base
    for column in rest:
        share = table_width(part([column], None), console) - 1
        if chunks[-1] and width + share > console.width:
            chunks.append([])
            width = base
        chunks[-1].append(column)
        width += share
    if len(chunks) == 1:
        return [table]
    return [part(head + c, f"{table.title or ''} ({i}/{len(chunks)})".lstrip()) for i, c in enumerate(chunks, 1)]


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
