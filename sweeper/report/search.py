"""`sweeper report` for a search study: per group, the trials, the best one and its hyperparameters,
and the mean over the final seeds of its configuration.

The final-seed cells also make an ordinary ablation table (sweeper.report), with paired deltas
against the baseline: each variant compared at its own tuned hyperparameters.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence

import pandas as pd
from rich.table import Table

from sweeper.report.console import add_columns
from sweeper.report.options import Format
from sweeper.report.tables import md_escape, tex_escape
from sweeper.search import GroupResult, trials
from sweeper.store import Store
from sweeper.study import Study, canonical


def frame(study: Study, groups: list[GroupResult]) -> pd.DataFrame:
    """One row per group: its labels, trial counts, the best trial, its params and final-seed statistics."""
    plan = study.search_plan
    params = [a.name for a in plan.searched] + list(plan.params)
    rows = []
    for g in groups:
        best = g.best
        values = g.final_values
        rows.append(
            {
                **g.labels,
                "budget": g.budget,
                "trials": sum(g.counts.values()),
                **g.counts,
                "best_trial": best.row.number if best else None,
                "best_value": best.value if best else math.nan,
                **{p: (best.row.params.get(p) if best else None) for p in params},
                "final_mean": statistics.fmean(values) if values else math.nan,
                "final_std": statistics.stdev(values) if len(values) > 1 else math.nan,
                "final_n": len(values),
                "final_expected": len(plan.final_seeds),
            }
        )
    return pd.DataFrame(rows)


def render_frame(frame: pd.DataFrame, fmt: Format) -> str:
    if fmt == Format.csv:
        return frame.to_csv(index=False, lineterminator="\n")
    return json.dumps(json.loads(frame.to_json(orient="records")), indent=1) + "\n"


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(study: Study, row: pd.Series) -> dict[str, str]:
    """The table's text per column for one group."""
    plan = study.search_plan
    params = [a.name for a in plan.searched] + list(plan.params)
    counts = [f"{int(row[k])} {k}" for k in ("pruned", "failed", "running") if row[k]]
    text = {a: str(row[a]) for a in plan.group_axes}
    text["trials"] = f"{int(row['trials'])}/{int(row['budget'])}" + (
        f" ({', '.join(counts)})" if counts else ""
    )
    text[f"best {plan.spec.metric}"] = _fmt(row["best_value"])
    text["trial"] = _fmt(row["best_trial"])
    text |= {p: _fmt(row[p]) for p in params}
    if plan.final_seeds:
        mean = _fmt(row["final_mean"]) + (
            f" ± {_fmt(row['final_std'])}" if not math.isnan(row["final_std"]) else ""
        )
        text["final seeds"] = f"{mean} (n={int(row['final_n'])}/{int(row['final_expected'])})"
    return text


def notes(store: Store, study: Study, groups: list[GroupResult]) -> list[str]:
    """What a reader must know about the table: trials that finished without the searched metric."""
    unscored = [k for g in groups for k in g.unscored]
    if not unscored:
        return []
    returned = sorted(store.metrics(unscored[0]))
    shown = ", ".join(returned[:8]) + (", …" if len(returned) > 8 else "")
    return [
        f"{len(unscored)} completed trials returned no finite '{study.search_plan.spec.metric}' and count as "
        "failed "
        f"(search.metric; one of them returned: {shown or 'nothing'})"
    ]


def render(study: Study, table: pd.DataFrame, fmt: Format, notes: Sequence[str] = ()) -> str | Table:
    plan = study.search_plan
    if fmt in (Format.csv, Format.json):
        return render_frame(table, fmt)
    title = (
        f"{study.name}: {plan.spec.sampler} search, {plan.spec.direction} {plan.spec.metric}, "
        f"{plan.budget} trials per group"
    )
    return _text_table(
        title, [_cells(study, row) for _, row in table.iterrows()], set(plan.group_axes), fmt, notes
    )


def _text_table(
    title: str, lines: list[dict[str, str]], left: set[str], fmt: Format, notes: Sequence[str] = ()
) -> str | Table:
    """Rows of formatted text as a rich, markdown or LaTeX table; `left` columns are left-aligned."""
    columns = list(lines[0]) if lines else []
    if fmt == Format.rich:
        out = Table(title=title, title_justify="left")
        add_columns(out, columns, right=[c for c in columns if c not in left])
        for line in lines:
            out.add_row(*line.values())
        out.caption, out.caption_justify = "\n".join(notes), "left"
        return out
    if fmt == Format.markdown:
        md = [
            f"**{md_escape(title)}**",
            "",
            "| " + " | ".join(map(md_escape, columns)) + " |",
            "|" + "|".join(":---" if c in left else "---:" for c in columns) + "|",
        ]
        md += ["| " + " | ".join(md_escape(v) for v in line.values()) + " |" for line in lines]
        return "\n".join(md + [""] * bool(notes) + [f"- {md_escape(n)}" for n in notes]) + "\n"
    tex = [
        f"% {title}",
        r"\begin{tabular}{" + "".join("l" if c in left else "r" for c in columns) + "}",
        r"\toprule",
        " & ".join(map(tex_escape, columns)) + r" \\",
        r"\midrule",
    ]
    tex += [
        " & ".join(tex_escape(v).replace("±", "$\\pm$") for v in line.values()) + r" \\" for line in lines
    ]
    return "\n".join(tex + [r"\bottomrule", r"\end{tabular}"] + [f"% {n}" for n in notes]) + "\n"


def trials_view(store: Store, study: Study, fmt: Format) -> str | Table:
    """Every trial and final repeat, best first within each group: the landscape the search saw."""
    plan = study.search_plan
    metric = plan.spec.metric
    frame = pd.DataFrame(trials(store, study))
    if not frame.empty:
        order = {g: i for i, g in enumerate(map(canonical, plan.groups.values()))}
        frame["_group"] = [order[canonical({a: r[a] for a in plan.group_axes})] for _, r in frame.iterrows()]
        frame["_kind"] = frame["kind"].map({"trial": 0, "final": 1})  # the repeats after the trials
        frame["_score"] = frame[metric] * (-1 if plan.spec.direction == "maximize" else 1)
        frame = frame.sort_values(["_group", "_kind", "_score"], kind="stable", na_position="last")
        frame = frame.drop(columns=["_group", "_kind", "_score"]).reset_index(drop=True)
    if fmt in (Format.csv, Format.json):
        return render_frame(frame, fmt)
    lines = [
        {c: _fmt(v) if c != "state" else str(v).lower() for c, v in row.items() if c != "key"}
        for _, row in frame.iterrows()
    ]
    return _text_table(
        f"{study.name}: every trial, best first", lines, {*plan.group_axes, "kind", "state"}, fmt
    )


def search_view(store: Store, study: Study, groups: list[GroupResult], fmt: Format) -> str | Table:
    return render(study, frame(study, groups), fmt, notes(store, study, groups))
