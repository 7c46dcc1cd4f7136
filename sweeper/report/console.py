"""Printing tables whole: the consoles, and rich tables that never lose a column or a value."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterable, Mapping
from copy import copy
from dataclasses import replace
from typing import Any

from rich.console import Console, Group
from rich.measure import Measurement
from rich.table import Column, Table

out = Console()
err = Console(stderr=True)


def add_columns(
    table: Table, columns: Iterable[str], right: Collection[str] = (), styles: Mapping[str, str] | None = None
) -> Table:
    """Columns whose text folds in a narrow terminal instead of being cut to '…' (an axis name
    or a label must stay readable); right-aligned number columns keep their header's width."""
    for c in columns:
        width = max(map(len, c.split("\n"))) if c in right else None
        table.add_column(
            c,
            justify="right" if c in right else "left",
            overflow="fold",
            min_width=width,
            style=(styles or {}).get(c),
        )
    return table


def table_width(table: Table, console: Console) -> int:
    """The width a table takes when nothing is folded or cut (rich measures columns, not titles)."""
    return Measurement.get(console, console.options.update_width(1 << 20), table).maximum


def print_table(table: Table, console: Console = out, *, keep: int | None = None) -> None:
    """Print a table whole: a report never loses a column or a value to the console's width.

    Outside a terminal (a pipe, a file) it is printed at its full width, however wide. In a
    terminal too narrow for it, it is split into several tables, each repeating the first `keep`
    columns (default: the leading left-aligned ones, the row labels), and says so. The caption is
    printed below as plain lines, wrapped to the terminal, or outside one to the table's width
    (at least the console's: 80 columns, or $COLUMNS), not folded into the table's width.
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
            caption = (
                f"split into {len(parts)} tables to fit this terminal's {console.width} columns "
                "(a pipe or --out FILE prints one)\n" + caption
            ).rstrip("\n")
    for part in parts:
        console.print(part)
    for line in caption.splitlines():
        console.print(line, markup=False, highlight=False)


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
    return [
        part(head + c, f"{table.title or ''} ({i}/{len(chunks)})".lstrip()) for i, c in enumerate(chunks, 1)
    ]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
