"""`sweeper report` for a search study: per group, the trials, the best one and its hyperparameters,
and the mean over the final seeds of its configuration.

The final-seed cells also make an ordinary ablation table (sweeper.report), with paired deltas
against the baseline: each variant compared at its own tuned hyperparameters.
"""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
from rich.table import Table

from sweeper.report import Format, md_escape, tex_escape
from sweeper.search import GroupResult
from sweeper.spec import Study
from sweeper.store import Store


def frame(study: Study, groups: list[GroupResult]) -> pd.DataFrame:
    """One row per group: its labels, trial counts, the best trial, its params and final-seed statistics."""
    plan = study.search
    params = [a.name for a in plan.searched] + list(plan.params)
    rows = []
    for g in groups:
        best = g.best
        values = g.final_values
        rows.append({
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
        })
    return pd.DataFrame(rows)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cells(study: Study, row: pd.Series) -> dict[str, str]:
    """The table's text per column for one group."""
    plan = study.search
    params = [a.name for a in plan.searched] + list(plan.params)
    counts = [f"{int(row[k])} {k}" for k in ("pruned", "failed", "running") if row[k]]
    text = {a: str(row[a]) for a in plan.group_axes}
    text["trials"] = f"{int(row['trials'])}/{int(row['budget'])}" + (f" ({', '.join(counts)})" if counts else "")
    text[f"best {plan.spec.metric}"] = _fmt(row["best_value"])
    text["trial"] = _fmt(row["best_trial"])
    text |= {p: _fmt(row[p]) for p in params}
    if plan.final_seeds:
        mean = _fmt(row["final_mean"]) + (f" ± {_fmt(row['final_std'])}" if not math.isnan(row["final_std"]) else "")
        text["final seeds"] = f"{mean} (n={int(row['final_n'])}/{int(row['final_expected'])})"
    return text


def notes(store: Store, study: Study, groups: list[GroupResult]) -> list[str]:
    """What a reader must know about the table: trials that finished without the searched metric."""
    unscored = [k for g in groups for k in g.unscored]
    if not unscored:
        return []
    returned = sorted(store.metrics(unscored[0]))
    shown = ", ".join(returned[:8]) + (", …" if len(returned) > 8 else "")
    return [f"{len(unscored)} completed trials returned no finite '{study.search.spec.metric}' and count as failed "
            f"(search.metric; one of them returned: {shown or 'nothing'})"]


def render(study: Study, table: pd.DataFrame, fmt: Format, notes: list[str] = ()) -> str | Table:
    plan = study.search
    if fmt == Format.csv:
        return table.to_csv(index=False, lineterminator="\n")
    if fmt == Format.json:
        return json.dumps(json.loads(table.to_json(orient="records")), indent=1) + "\n"
    lines = [_cells(study, row) for _, row in table.iterrows()]
    columns = list(lines[0]) if lines else []
    title = (f"{study.name}: {plan.spec.sampler} search, {plan.spec.direction} {plan.spec.metric}, "
             f"{plan.budget} trials per group")
    if fmt == Format.rich:
        out = Table(title=title, title_justify="left")
        for c in columns:
            out.add_column(c, justify="left" if c in plan.group_axes else "right")
        for line in lines:
            out.add_row(*line.values())
        out.caption, out.caption_justify = "\n".join(notes), "left"
        return out
    if fmt == Format.markdown:
        md = [f"**{md_escape(title)}**", "", "| " + " | ".join(map(md_escape, columns)) + " |",
              "|" + "|".join(":---" if c in plan.group_axes else "---:" for c in columns) + "|"]
        md += ["| " + " | ".join(md_escape(v) for v in line.values()) + " |" for line in lines]
        return "\n".join(md + [""] * bool(notes) + [f"- {md_escape(n)}" for n in notes]) + "\n"
    tex = [f"% {title}", r"\begin{tabular}{" + "".join("l" if c in plan.group_axes else "r" for c in columns) + "}",
           r"\toprule", " & ".join(map(tex_escape, columns)) + r" \\", r"\midrule"]
    tex += [" & ".join(tex_escape(v).replace("±", "$\\pm$") for v in line.values()) + r" \\" for line in lines]
    return "\n".join(tex + [r"\bottomrule", r"\end{tabular}"] + [f"% {n}" for n in notes]) + "\n"


def search_view(store: Store, study: Study, groups: list[GroupResult], fmt: Format) -> str | Table:
    return render(study, frame(study, groups), fmt, notes(store, study, groups))
