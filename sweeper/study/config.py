"""Configs as plain dicts: canonical JSON, content-addressed cell keys, dotted paths, merging."""

from __future__ import annotations

import hashlib
import json
from typing import Any

SEED_AXIS = "seed"


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace; equal configs give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def cell_key(task: str, config: dict) -> str:
    return hashlib.sha256(canonical({"task": task, "config": config}).encode()).hexdigest()[:16]


def expand_dotted(mapping: dict, where: str, problems: list[tuple[str, str]]) -> dict:
    """Turn {'a.b': 1} into {'a': {'b': 1}}, recursively; a leaf set twice is a problem."""
    out: dict = {}
    for raw_key, value in mapping.items():
        key = str(raw_key)
        if isinstance(value, dict):
            value = expand_dotted(value, join_path(where, key), problems)
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(
                    (join_path(where, ".".join(parts[: i + 1])), "set twice (as a value and as a mapping)")
                )
                break
            node = child
        else:
            leaf = parts[-1]
            if leaf in node and isinstance(node[leaf], dict) and isinstance(value, dict):
                node[leaf] = merge(node[leaf], value)
            elif leaf in node:
                problems.append((join_path(where, key), "set twice"))
            else:
                node[leaf] = value
    return out


def merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings merge key by key; anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return override


def set_path(config: dict, parts: tuple[str, ...], value: Any) -> dict:
    """A copy of `config` with `value` merged at `parts`; only the spine is copied."""
    out = dict(config)
    head = parts[0]
    if len(parts) == 1:
        out[head] = merge(config.get(head), value) if isinstance(config.get(head), dict) else value
    else:
        child = config.get(head)
        out[head] = set_path(child if isinstance(child, dict) else {}, parts[1:], value)
    return out


def join_path(*parts: str) -> str:
    return ".".join(p for p in parts if p)
