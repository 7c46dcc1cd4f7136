"""The report's and the plot's choices (formats, error bars, file types), kept free of imports: the
command line declares its options with them before it knows which command runs."""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    rich = "rich"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    json = "json"
    html = "html"  # the whole study on one page: sweeper.report.html


EXTENSIONS = {
    ".md": Format.markdown,
    ".markdown": Format.markdown,
    ".tex": Format.latex,
    ".csv": Format.csv,
    ".json": Format.json,
    ".txt": Format.rich,
    ".html": Format.html,
    ".htm": Format.html,
}


class ErrorBar(StrEnum):
    std = "std"
    ci = "ci"


SUFFIXES = (".png", ".pdf", ".svg")  # the figure files `sweeper plot` writes
