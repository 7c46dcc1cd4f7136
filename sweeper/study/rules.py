"""Rules over a study's axes: include/exclude, resource overrides' `when`, and the baseline.

A rule maps axis names to a label or a list of labels; it is checked against the axes here and
kept as canonical label sets, which the cells are matched against.
"""

from __future__ import annotations

from typing import Any

from sweeper.errors import did_you_mean
from sweeper.study.config import canonical
from sweeper.study.expanded import Axis
from sweeper.study.problems import Problems


def rule(p: Problems, raw: dict, where: str, axes: list[Axis]) -> dict[str, set[str]]:
    """A rule maps axis names to a label or a list of labels; returns canonical label sets."""
    by_name = {a.name: a for a in axes}
    out: dict[str, set[str]] = {}
    if not raw:
        p.add(where, "empty rule; expected axis: value pairs")
    for name, wanted in raw.items():
        axis = by_name.get(name)
        if axis is None:
            hint = did_you_mean(name, by_name)
            p.add(f"{where}.{name}", f"unknown axis{hint}; axes are: {', '.join(by_name)}")
            continue
        known = {canonical(label) for label in axis.labels}
        alternatives = wanted if isinstance(wanted, list) and canonical(wanted) not in known else [wanted]
        for w in alternatives:
            if canonical(w) not in known:
                hint = did_you_mean(str(w), map(str, axis.labels))
                shown = ", ".join(map(str, axis.labels))
                p.add(f"{where}.{name}", f"{w!r} is not a value of this axis{hint}; expected one of: {shown}")
        out[name] = {canonical(w) for w in alternatives}
    return out


def matches(rule: dict[str, set[str]], canon: dict[str, str]) -> bool:
    """Does a cell (its canonical labels) satisfy the rule?"""
    return all(canon[name] in wanted for name, wanted in rule.items())


def baseline(p: Problems, raw: Any, axes: list[Axis]) -> dict | None:
    """The labels of the reference variant; the report pairs every other variant with it."""
    if raw is None:
        return None
    if not isinstance(raw, str | dict):
        p.add("baseline", f"expected a variant name or a mapping axis: value, got {raw!r}")
        return None
    if isinstance(raw, str):
        named = [a for a in axes if a.named]
        if len(named) != 1:
            p.add(
                "baseline",
                f"a bare variant name needs exactly one named-variants axis (found {len(named)}); "
                f"write baseline: {{axis: variant}}",
            )
            return None
        raw = {named[0].name: raw}
    for name, labels in rule(p, raw, "baseline", axes).items():
        if len(labels) != 1:
            p.add(f"baseline.{name}", "expected a single value, not a list")
    return raw
