"""A study's axes and seeds, checked against base: each axis a config path and its values or variants.

A path must exist in base (or lie under an empty mapping, or be declared new with '+'), so a typo
is named where it is written instead of making cells that silently ignore it.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sweeper.errors import did_you_mean
from sweeper.study.config import SEED_AXIS, canonical, expand_dotted, join_path
from sweeper.study.expanded import Axis
from sweeper.study.problems import Problems

CONFIG_PATH = re.compile(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*")


def parse_seeds(p: Problems, raw: Any, where: str = "seeds") -> list[int]:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return list(range(raw))
    if isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) for s in raw):
        if len(set(raw)) != len(raw):
            p.add(where, f"duplicate seeds in {raw}")
        return raw
    p.add(where, f"expected a count >= 1 or a non-empty list of integers, got {raw!r}")
    return []


def parse_factors(p: Problems, axes: dict[str, Any], base: dict) -> list[list[Axis]]:
    """Each factor varies on its own; a zip group is one factor of several axes."""
    out: list[list[Axis]] = []
    for name, values in axes.items():
        if name == "zip":
            groups = values if isinstance(values, list) else [values]
            for g, group in enumerate(groups):
                where = f"axes.zip[{g}]"
                if not isinstance(group, dict) or len(group) < 2:
                    p.add(where, "expected a mapping of two or more axes that vary together")
                    continue
                found = [axis(p, n, v, f"{where}.{n}", base) for n, v in group.items()]
                zipped = [a for a in found if a]
                if len({len(a.values) for a in zipped}) > 1:
                    lengths = ", ".join(f"{a.name}: {len(a.values)}" for a in zipped)
                    p.add(where, f"zipped axes need the same number of values ({lengths})")
                out.append(zipped)
        else:
            found_axis = axis(p, name, values, f"axes.{name}", base)
            if found_axis:
                out.append([found_axis])
    names = [a.name for f in out for a in f]
    for dup in sorted(n for n, k in Counter(names).items() if k > 1):
        p.add(f"axes.{dup}", "this axis is declared more than once")
    return out


def axis(p: Problems, raw_name: str, values: Any, where: str, base: dict) -> Axis | None:
    declared_new = raw_name.startswith("+")
    name = raw_name.lstrip("+")
    if not CONFIG_PATH.fullmatch(name):
        p.add(where, "expected a dotted config path such as 'model.scale'")
        return None
    if name == SEED_AXIS:
        p.add(where, "'seed' is reserved; use the top-level 'seeds' key")
        return None
    if isinstance(values, list):
        if not values:
            p.add(where, "empty axis; expected at least one value")
            return None
        seen = [canonical(v) for v in values]
        dups = sorted(s for s, k in Counter(seen).items() if k > 1)  # one pass: an axis may hold 10,000
        if dups:
            p.add(where, f"duplicate values {', '.join(dups)}")
        check_path(p, base, name, where, declared_new)
        return Axis(name, tuple(values), tuple(values), named=False)
    if isinstance(values, dict):
        if not values:
            p.add(where, "empty axis; expected at least one named variant")
            return None
        variants = {str(k): v for k, v in values.items()}
        resolved = []
        for label, sub in variants.items():
            sub = {} if sub is None else sub
            if isinstance(sub, dict):
                sub = expand_dotted(sub, f"{where}.{label}", p.found)
                for leaf in _leaf_paths(sub):
                    check_path(p, base, join_path(name, leaf), f"{where}.{label}.{leaf}", declared_new)
            else:
                check_path(p, base, name, f"{where}.{label}", declared_new)
            resolved.append(sub)
        return Axis(name, tuple(variants), tuple(resolved), named=True)
    p.add(where, f"expected a list of values or a mapping of named variants, got {values!r}")
    return None


def check_path(p: Problems, base: dict, path: str, where: str, declared_new: bool) -> None:
    """A path must exist in base, or lie under an empty mapping, or be declared new with '+'."""
    node: Any = base
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            prefix = ".".join(parts[:i])
            p.add(where, f"'{prefix}' is a {type(node).__name__} in base, not a mapping")
            return
        if part not in node:
            if declared_new or not node:
                return
            prefix = ".".join(parts[:i])
            siblings = [join_path(prefix, k) for k in node]
            hint = did_you_mean(join_path(prefix, part), siblings)
            p.add(
                where,
                f"'{path}' is not in base{hint}; add it to base, or write '+{path}' to declare a new key",
            )
            return
        node = node[part]


def _leaf_paths(mapping: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in mapping.items():
        path = join_path(prefix, str(k))
        out.extend(_leaf_paths(v, path) if isinstance(v, dict) and v else [path])
    return out
