"""What status, rebuild, launch and --wait print about a study's cells: the status view (counts,
per axis value, the running and the failed cells), a search's view, the running cells' steps."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from sweeper.report.console import add_columns
from sweeper.states import ACTIVE, UNSUCCESSFUL, CellState, category

if TYPE_CHECKING:
    from sweeper.study import Study


def search_line(study: Study) -> str:
    plan = study.search_plan
    spec = plan.spec
    finals = f", then the best of each again with seeds {plan.final_seeds}" if plan.final_seeds else ""
    return (
        f"search: {len(plan.groups)} group(s) ({', '.join(plan.group_axes) or 'the whole study'}) x "
        f"{plan.budget} "
        f"trials, {spec.sampler} sampler, {spec.direction} {spec.metric}, {plan.parallel} in flight"
        f"{', pruner ' + spec.pruner.kind if spec.pruner else ''}{finals}"
    )


def status_view(study: Study, statuses: list, *, detail: bool) -> Group:
    counts = Counter(s.state for s in statuses)
    colour = {
        CellState.COMPLETED: "green",
        CellState.RUNNING: "yellow",
        CellState.PENDING: "yellow",
        CellState.FAILED: "red",
        CellState.INTERRUPTED: "red",
    }
    parts: list = [
        f"[bold]{study.name}[/]: {len(statuses)} cells — "
        + ", ".join(
            f"[{colour.get(st, 'white')}]{counts[st]} {st.lower()}[/]" for st in CellState if counts[st]
        )
    ]
    if not detail:
        return Group(*parts)
    by_axis = Table(title="by axis value", title_justify="left")
    columns = ("done", "running", "pending", "failed", "new")
    add_columns(by_axis, ("axis", "value", *columns), right=columns)
    for axis in study.axis_names:
        values: dict[str, Counter] = {}
        for s in statuses:
            # Submitted but not started is "pending", not "running", as in the header line.
            kind = (
                "running"
                if s.state == CellState.RUNNING
                else "pending"
                if s.state in ACTIVE
                else category(s.state)
            )
            values.setdefault(str(s.labels[axis]), Counter())[kind] += 1
        for i, (label, c) in enumerate(values.items()):
            by_axis.add_row(axis if i == 0 else "", label, *(str(c.get(k, 0) or "·") for k in columns))
        by_axis.add_section()
    parts.append(by_axis)
    running = [s for s in statuses if s.state == CellState.RUNNING]
    if running:
        t = add_columns(
            Table(title="running", title_justify="left"),
            ("key", "cell", "attempt", "step", "last values", "heartbeat"),
        )
        for s in running:
            p = s.progress or {}
            shown_values = ", ".join(f"{k}={v:.4g}" for k, v in list(p.get("metrics", {}).items())[:3])
            age = f"{s.heartbeat_age:.0f}s ago" if s.heartbeat_age is not None else "—"
            t.add_row(
                s.key, labels_text(s.labels), str(s.attempt), str(p.get("step", "—")), shown_values, age
            )
        parts.append(t)
    bad = [s for s in statuses if s.state in UNSUCCESSFUL]
    if bad:
        t = add_columns(
            Table(
                title="failed and interrupted (see `sweeper logs KEY`; `sweeper resume` retries by cause)",
                title_justify="left",
            ),
            ("key", "cell", "attempt", "state", "cause", "detail"),
        )
        for s in bad:
            t.add_row(
                s.key,
                labels_text(s.labels),
                str(s.attempt),
                f"[red]{s.state.lower()}[/]",
                s.cause or "",
                s.detail or "",
            )
        parts.append(t)
    return Group(*parts)


def search_view(store, study: Study) -> Table:
    """Per group: trials run of the budget, by outcome, and the best value so far."""
    from sweeper.search import results

    spec = study.search_plan.spec
    table = Table(title=f"search: {spec.direction} {spec.metric} ({spec.sampler})", title_justify="left")
    numbers = ("trials", "completed", "running", "pruned", "failed", "best", "trial")
    add_columns(table, (*study.search_plan.group_axes, *numbers), right=numbers)
    for g in results(store, study):
        best = g.best
        table.add_row(
            *(str(v) for v in g.labels.values()),
            f"{sum(g.counts.values())}/{g.budget}",
            *(str(g.counts[k] or "·") for k in ("completed", "running", "pruned", "failed")),
            f"{best.value:.4g}" if best else "–",
            str(best.row.number) if best else "–",
        )
    return table


def labels_text(labels: dict) -> str:
    return " ".join(f"{v}" for v in labels.values())


def running_cells(statuses: list, shown: int = 8) -> Text:
    """The running cells with their step (of the total their task reports), a few of them."""
    from sweeper.progress import step_total

    running = [s for s in statuses if s.state == CellState.RUNNING]
    text = Text()
    for s in running[:shown]:
        step, total = step_total(s.progress)
        where = (
            "starting"
            if step is None
            else f"step {step}" + (f"/{total} ({step / total:.0%})" if total else "")
        )
        text.append(f"  ⟳ {s.key[:12]} {labels_text(s.labels)}  {where}\n", style="dim")
    if len(running) > shown:
        text.append(f"  … {len(running) - shown} more running\n", style="dim")
    return text
