"""Rendering a summary: rich, Markdown, LaTeX, CSV and JSON tables, and the coverage view."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import pandas as pd
from rich.table import Table

from sweeper.report.console import add_columns
from sweeper.report.load import describes_model
from sweeper.report.options import Format
from sweeper.report.statistics import FLAG_LEGEND, FLAGS, Summary

# ----------------------------------------------------------------------------- number formatting


def _decimals(values: Iterable[float]) -> int:
    """Three significant digits of the column's largest magnitude: 47.3, 0.812, 812."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(max(finite))))))


def _si(value: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.3g}"


def _is_pct(metric: str) -> bool:
    return metric.endswith(("pct", "percent"))


def _is_count(metric: str) -> bool:
    return metric.startswith(("params.", "flops.")) and not _is_pct(metric)


@dataclass(slots=True)
class Entry:
    """One table cell's parts, formatted; renderers only arrange and style them."""

    value: str  # "47.3" (empty when there is no value)
    spread: str  # "0.3" (empty when n < 2 or constant)
    n: str  # "2/3" when fewer values than members, else ""
    delta: str  # "+2.1"
    interval: str  # "[1.5, 2.7]"
    verdict: int  # +1 better than baseline (interval clear of 0), -1 worse, 0 neither
    best: bool
    flags: str


def _entries(summary: Summary) -> dict[tuple, dict[tuple, Entry]]:
    """(row labels) -> (col labels..., metric) -> Entry."""
    cells = summary.cells
    means = cells.groupby("metric", sort=False)["mean"]
    kind = {m: ("count" if _is_count(m) else "pct" if _is_pct(m) else "") for m in summary.metrics}
    decimals = {
        m: _decimals(means.get_group(m).tolist()) if m in means.groups else 2 for m in summary.metrics
    }
    decimals |= {m: max(d, 1) for m, d in decimals.items() if kind[m] == "pct"}
    sign = {m: summary.direction(m) for m in summary.metrics}
    table: dict[tuple, dict[tuple, Entry]] = {}
    nr, nl = len(summary.rows), len(summary.rows) + len(summary.cols)
    fields = [
        "metric",
        "mean",
        "std",
        "n",
        "delta",
        "delta_n",
        "ci_low",
        "ci_high",
        "expected",
        "best",
        "flags",
    ]
    columns = [cells[c].tolist() for c in [*summary.rows, *summary.cols, *fields]]
    for rec in zip(*columns, strict=True):
        metric, mean, std, n, delta, delta_n, lo, hi, expected, best, flags = rec[nl:]
        d, k = decimals[metric], kind[metric]
        spread = ""
        if n == 0 or not math.isfinite(mean):
            value = ""
        elif k == "count":
            value, spread = _si(mean), (_si(std) if n > 1 and std > 0 else "")
        else:
            value = f"{mean:+.{d}f} %" if k == "pct" else f"{mean:.{d}f}"
            spread = f"{std:.{d}f}" if n > 1 and std > 0 else ""
        # An unknown direction still has a delta (uncoloured); a model's size has none.
        judged = sign[metric] != 0 or not describes_model(metric)
        show_delta = judged and delta_n > 0 and math.isfinite(delta)
        has_interval = show_delta and delta_n >= 2 and math.isfinite(lo)
        verdict = (sign[metric] if lo > 0 else -sign[metric] if hi < 0 else 0) if has_interval else 0
        table.setdefault(rec[:nr], {})[(*rec[nr:nl], metric)] = Entry(
            value,
            spread,
            f"{n}/{expected}" if 0 < n < expected else "",
            f"{delta:+.{d}f}" if show_delta else "",
            f"[{lo:+.{d}f}, {hi:+.{d}f}]" if has_interval else "",
            verdict,
            best,
            flags,
        )
    return table


def _columns(summary: Summary) -> list[tuple]:
    """Column keys (col labels..., metric) in the order the groups first appear."""
    groups = list(
        dict.fromkeys(map(tuple, summary.coverage[summary.cols].itertuples(index=False, name=None)))
    )
    return [(*g, m) for g in groups for m in summary.metrics]


def _row_keys(summary: Summary) -> list[tuple]:
    return list(dict.fromkeys(map(tuple, summary.coverage[summary.rows].itertuples(index=False, name=None))))


def _col_title(summary: Summary, key: tuple, sep: str) -> str:
    """'model.scale=base · linear_seg.ade20k.miou': a bare value would not say which axis it is."""
    return sep.join([*(f"{a}={v}" for a, v in zip(summary.cols, key[:-1], strict=False)), key[-1]])


def dotted_lines(metric: str, width: int) -> str:
    """A metric name broken after its dots into lines of at most ``width`` characters (a part
    longer than that keeps its line), so that a column is as wide as its values, not its name:
    over values like '34.3 ± 0.9', 'linear_seg.procedural.miou' takes 11 columns, not 26."""
    lines = [""]
    for part in metric.replace(".", ".\n").split("\n"):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _legend(summary: Summary, used: set[str]) -> list[str]:
    lines = [f"{FLAGS[c]} {FLAG_LEGEND[c]}" for c in FLAGS if FLAGS[c] in used]
    lines += _direction_legend(summary)
    if summary.baseline:
        base = ", ".join(f"{k}={v}" for k, v in summary.baseline.items())
        lines.append(
            f"deltas: mean paired difference vs {base}, each pair equal on every other axis and "
            "seed; 95 % paired-t interval (n >= 2)"
        )
    if summary.pooled:
        flags = " ".join(f"--pool {a}" for a in summary.pooled)
        lines.append(
            f"mean ± std over seeds and {', '.join(summary.pooled)} pooled together ({flags}): "
            "one value per cell; n/N when fewer cells have the value than the group has"
        )
    else:
        lines.append("mean ± std over seeds; n/N when fewer seeds have the value than the group has cells")
    return lines + summary.notes


def _direction_legend(summary: Summary) -> list[str]:
    """Which way each metric is judged, so a bold value says what it claims and an unjudged one shows."""
    by = {s: [m for m in summary.metrics if summary.direction(m) == s] for s in (1, -1, 0)}
    words = ((1, "higher is better"), (-1, "lower"))
    parts = [f"{word} for {', '.join(by[s])}" for s, word in words if by[s]]
    if not parts:
        return []
    if unjudged := [m for m in by[0] if not describes_model(m)]:  # parameters and FLOPs are never judged
        parts.append(f"never bold (no known direction; see report.directions): {', '.join(unjudged)}")
    return [f"bold: best of its column; {'; '.join(parts)}"]


# ----------------------------------------------------------------------------- renderers


RICH_MAX_COLUMNS = 48  # wider tables move their column axes into the rows (every value kept, with a note)
RICH_MAX_ROWS = 50  # cut there in a terminal, with a note (rich takes ~7 ms a row); pipes and files never are


def render_csv(summary: Summary) -> str:
    """Tidy rows: labels..., metric, mean, std, n, expected, delta, delta_n, ci_low, ci_high, best, flags.

    Floats keep 12 significant digits (statistics, not raw data; formatting them is most of the cost).
    """
    buf = io.StringIO()
    summary.cells.to_csv(buf, index=False, lineterminator="\n", float_format="%.12g")
    return buf.getvalue()


def render_json(summary: Summary) -> str:
    """One object; its `cells` (the tidy rows) and `coverage` are serialized by pandas (NaN -> null)."""
    head = {
        "study": summary.study,
        "rows": summary.rows,
        "cols": summary.cols,
        "pooled": summary.pooled,
        "baseline": summary.baseline,
        "metrics": summary.metrics,
        "directions": {m: summary.direction(m) for m in summary.metrics},
        "notes": summary.notes,
    }
    frames = [
        f'"{name}": {frame.to_json(orient="records", double_precision=15)}'
        for name, frame in (("cells", summary.cells), ("coverage", summary.coverage))
    ]
    return json.dumps(head, default=str)[:-1] + ", " + ", ".join(frames) + "}\n"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def render_markdown(summary: Summary) -> str:
    """A GitHub pipe table; the best value per column in bold; the legend below."""
    entries, columns, rows = _entries(summary), _columns(summary), _row_keys(summary)
    used: set[str] = set()
    header = [*summary.rows, *(_col_title(summary, c, " · ") for c in columns)]
    lines = [
        "| " + " | ".join(map(md_escape, header)) + " |",
        "|" + "|".join([":---"] * len(summary.rows) + ["---:"] * len(columns)) + "|",
    ]
    for r in rows:
        cells = [md_escape(str(v)) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("–")
                continue
            text = e.value + (f" ± {e.spread}" if e.spread else "")
            text = f"**{text}**" if e.best else text
            if e.delta:
                text += f" ({e.delta}{' ' + e.interval if e.interval else ''})"
            if e.n:
                text += f" n={e.n}"
            text += md_escape(e.flags)
            used.update(e.flags)
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(f"- {md_escape(line)}" for line in _legend(summary, used))
        + "\n"
    )


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "±": r"$\pm$",
    "…": r"\dots{}",
    "–": "--",
    "·": r"$\cdot$",
}
_TEX_FLAGS = {"*": r"$^{*}$", "†": r"$^{\dagger}$", "‡": r"$^{\ddagger}$"}
TEX_PREAMBLE = r"% sweeper report: needs \usepackage{booktabs} in the preamble"


def tex_escape(text: str) -> str:
    """Text-mode LaTeX for any string (pdflatex's default OT1 font would print '<' as '¡'); '--' stays
    two hyphens (a flag), not an en dash."""
    return "".join(_TEX.get(c, c) for c in re.sub("-(?=-)", "-\0", text)).replace("\0", "{}")


def tex_legend(lines: Iterable[str]) -> list[str]:
    """The legend as text under the tabular (not % comments): a pasted table says what it means."""
    text = [
        (_TEX_FLAGS[line[0]] + tex_escape(line[1:])) if line[:1] in _TEX_FLAGS else tex_escape(line)
        for line in lines
    ]
    return [r"\par\smallskip", r"{\footnotesize", *(f"{line}\\par" for line in text), "}"]


def render_latex(summary: Summary) -> str:
    """A booktabs tabular (the package named in its first line), one multicolumn header per column
    group with its axis names, `$\\mathbf{x} \\pm y$` cells with their deltas and intervals, and
    the legend below it as text."""
    entries, columns, rows = _entries(summary), _columns(summary), _row_keys(summary)
    nr, nm = len(summary.rows), len(summary.metrics)
    used: set[str] = set()
    lines = [TEX_PREAMBLE, r"\begin{tabular}{" + "l" * nr + "r" * len(columns) + "}", r"\toprule"]
    if summary.cols:
        groups = [columns[i][:-1] for i in range(0, len(columns), nm)]
        titles = [", ".join(f"{a}={v}" for a, v in zip(summary.cols, g, strict=False)) for g in groups]
        spans = [r"\multicolumn{%d}{c}{%s}" % (nm, tex_escape(t)) for t in titles]
        lines.append(" & ".join([""] * nr + spans) + r" \\")
        lines.append(
            " ".join(
                r"\cmidrule(lr){%d-%d}" % (nr + 1 + i * nm, nr + (i + 1) * nm) for i in range(len(groups))
            )
        )
    lines.append(
        " & ".join([tex_escape(a) for a in summary.rows] + [tex_escape(c[-1]) for c in columns]) + r" \\"
    )
    lines.append(r"\midrule")
    for r in rows:
        cells = [tex_escape(str(v)) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("--")
                continue
            value = tex_escape(e.value)
            core = rf"\mathbf{{{value}}}" if e.best else value
            text = f"${core}" + (rf" \pm {e.spread}$" if e.spread else "$")
            if e.delta:
                text += rf" {{\scriptsize ${e.delta}$" + (f" ${e.interval}$" if e.interval else "") + "}"
            if e.n:
                text += rf" {{\scriptsize n={e.n}}}"
            text += "".join(_TEX_FLAGS[f] for f in e.flags)
            used.update(e.flags)
            cells.append(text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines + tex_legend(_legend(summary, used))) + "\n"


def render_rich(summary: Summary, max_rows: int | None = None) -> Table:
    """A terminal table: bold best value, delta in green (better, interval clear of 0) or red.

    `max_rows` cuts a long table for a terminal (rich takes ~7 ms a row), with a note; a pipe
    or a file gets every row. Width is sweeper.report.console.print_table's concern: it never cuts.
    """
    if summary.cols and len(_columns(summary)) > RICH_MAX_COLUMNS:
        summary = _fold_cols_into_rows(summary)
    rows = _row_keys(summary)
    shown = rows[:max_rows] if max_rows else rows
    if len(shown) < len(rows):  # format only what is shown
        keys = pd.MultiIndex.from_frame(summary.cells[summary.rows])
        summary = replace(summary, cells=summary.cells[keys.isin(pd.MultiIndex.from_tuples(shown))])
    entries, columns = _entries(summary), _columns(summary)
    table = Table(title=f"{summary.study}", title_justify="left", show_lines=bool(summary.baseline))
    widths = dict.fromkeys(columns, 1)  # of each column's widest value, in characters
    used: set[str] = set()
    body = []
    for r in shown:
        cells = [str(v) for v in r]
        for c in columns:
            e = entries.get(r, {}).get(c)
            if e is None or not e.value:
                cells.append("[dim]–[/]")
                continue
            mean = e.value + (f" ± {e.spread}" if e.spread else "")
            count = f"n={e.n}" if e.n else ""
            delta = e.delta + (" " + e.interval if e.interval else "")
            widths[c] = max(widths[c], len(mean + e.flags) + (len(count) + 1 if count else 0), len(delta))
            text = f"[bold]{mean}[/]" if e.best else mean
            text += f"[yellow]{e.flags}[/]" if e.flags else ""
            text += f" [dim]{count}[/]" if count else ""
            if e.delta:
                style = {1: "green", -1: "red", 0: "dim"}[e.verdict]
                text += f"\n[{style}]{delta}[/]"
            used.update(e.flags)
            cells.append(text)
        body.append(cells)
    for c in columns:  # a column group's title ('framework=supervised') widens its columns too
        widths[c] = max(
            [widths[c], 8, *(len(f"{a}={v}") for a, v in zip(summary.cols, c[:-1], strict=False))]
        )
    titles = [_col_title(summary, (*c[:-1], dotted_lines(c[-1], widths[c])), "\n") for c in columns]
    add_columns(table, (*summary.rows, *titles), right=titles)
    for cells in body:
        table.add_row(*cells)
    caption = _legend(summary, used)
    if len(shown) < len(rows):
        caption.insert(0, f"… {len(rows) - len(shown):,} more rows; pipe it, or use --out FILE, for all")
    table.caption = "\n".join(caption)
    return table


def _fold_cols_into_rows(summary: Summary) -> Summary:
    """The same summary with its column axes moved into the rows (columns: the metrics only)."""
    rows = summary.rows + summary.cols
    notes = summary.notes + [
        f"{len(_columns(summary))} columns are too many for one table: "
        f"{', '.join(summary.cols)} shown as rows (see --cols)"
    ]
    return replace(summary, rows=rows, cols=[], notes=notes)


def coverage_entries(summary: Summary) -> tuple[list[tuple], list[tuple], dict[tuple, str]]:
    """Row keys, column-group keys and a compact text per group: '3/3 ✓', '1/3 ⟳1 ✗1'."""
    rows = _row_keys(summary)
    groups = list(
        dict.fromkeys(map(tuple, summary.coverage[summary.cols].itertuples(index=False, name=None)))
    )
    text = {}
    for rec in summary.coverage.itertuples(index=False, name=None):
        done, running, failed, new, total = rec[-5:]
        parts = [f"{done}/{total}"]
        if done == total:
            parts.append("✓")
        parts += [f"⟳{running}"] * bool(running) + [f"✗{failed}"] * bool(failed) + [f"·{new}"] * bool(new)
        text[rec[: len(rec) - 5]] = " ".join(parts)
    return rows, groups, text


def render_coverage(summary: Summary, fmt: Format, max_rows: int | None = None) -> str | Table:
    """Which groups are done / running (⟳) / failed (✗) / not run (·), so one sees what a table awaits."""
    if fmt in (Format.csv, Format.json):
        frame = summary.coverage
        return (
            frame.to_csv(index=False, lineterminator="\n")
            if fmt == Format.csv
            else frame.to_json(orient="records") + "\n"
        )
    if fmt == Format.rich and len(summary.coverage[summary.cols].drop_duplicates()) > RICH_MAX_COLUMNS // 2:
        summary = _fold_cols_into_rows(summary)
    rows, groups, text = coverage_entries(summary)
    titles = [", ".join(f"{a}={v}" for a, v in zip(summary.cols, g, strict=False)) or "cells" for g in groups]
    grid = [[*map(str, r), *(text.get((*r, *g), "–") for g in groups)] for r in rows]
    if fmt == Format.rich:
        caption = ["done/cells; ✓ complete, ⟳ running, ✗ failed, · not run yet"]
        if max_rows and len(grid) > max_rows:
            caption.insert(0, f"… {len(grid) - max_rows:,} more rows; pipe it, or use --out FILE, for all")
        table = Table(title=f"{summary.study}: coverage", title_justify="left", caption="\n".join(caption))
        add_columns(table, (*summary.rows, *titles), right=titles)
        for line in grid[:max_rows] if max_rows else grid:
            table.add_row(*line)
        return table
    if fmt == Format.markdown:
        lines = [
            "| " + " | ".join(map(md_escape, [*summary.rows, *titles])) + " |",
            "|" + "|".join([":---"] * len(summary.rows) + ["---:"] * len(titles)) + "|",
        ]
        lines += ["| " + " | ".join(map(md_escape, line)) + " |" for line in grid]
        return "\n".join(lines) + "\n"
    lines = [
        TEX_PREAMBLE,
        r"\begin{tabular}{" + "l" * len(summary.rows) + "r" * len(titles) + "}",
        r"\toprule",
        " & ".join(map(tex_escape, [*summary.rows, *titles])) + r" \\",
        r"\midrule",
    ]
    lines += [
        " & ".join(
            tex_escape(c.replace("✓", "ok").replace("⟳", "run ").replace("✗", "fail ").replace("·", "new "))
            for c in line
        )
        + r" \\"
        for line in grid
    ]
    legend = ["done/cells; ok: complete, run: running, fail: failed, new: not run yet"]
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"] + tex_legend(legend)) + "\n"


def render(summary: Summary, fmt: Format, max_rows: int | None = None) -> str | Table:
    if fmt == Format.rich:
        return render_rich(summary, max_rows)
    return {
        Format.markdown: render_markdown,
        Format.latex: render_latex,
        Format.csv: render_csv,
        Format.json: render_json,
    }[fmt](summary)


def complete(summary: Summary) -> bool:
    return bool((summary.coverage["done"] == summary.coverage["total"]).all())
