"""A study file's problems, one line each naming the key path and what it wants: those the expansion
finds (Problems, gathered so that one run names them all) and pydantic's, translated."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from pydantic import (
    ValidationError,
)

from sweeper.errors import SpecError, did_you_mean
from sweeper.study.config import join_path


@dataclass
class Problems:
    """What is wrong with one study file so far (key path, message), and its warnings."""

    file: str
    found: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, where: str, message: str) -> None:
        self.found.append((where, message))

    def raise_any(self) -> None:
        if self.found:
            raise SpecError(self.file, self.found)


_EXPECTED = {
    "string_pattern_mismatch": {
        "task": "a 'module.path:function' string, e.g. 'model.experiment:run'",
        "check": "a 'module.path:function' string, e.g. 'model.experiment:check'",
        "rehearse": "a 'module.path:object' string, e.g. 'model.rehearsal:rehearsal'",
        "study": "a name of letters, digits and _ . + -",
    },
}


_BAD_EXECUTOR = ("union_tag_invalid", "union_tag_not_found", "model_attributes_type")


def pydantic_problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # A discriminator's tag ('local', 'float', 'median', …) is not a key the user wrote.
        if loc[:1] == ["executor"] and len(loc) > 1:
            loc.pop(1)
        elif (
            loc[:2] == ["search", "space"]
            and len(loc) > 3
            or loc[:2] == ["search", "pruner"]
            and len(loc) > 2
        ):
            loc.pop(3 if loc[1] == "space" else 2)
        if e["type"] == "unknown_key":
            problems.append((join_path(*loc, e["ctx"]["key"]), e["msg"]))
        elif e["type"] in _EXPECTED and loc and loc[-1] in _EXPECTED[e["type"]]:
            problems.append(
                (join_path(*loc), f"expected {_EXPECTED[e['type']][loc[-1]]}, got {e['input']!r}")
            )
        elif e["type"] in _BAD_EXECUTOR and loc == ["executor"]:
            given = e["input"].get("kind") if e["type"] == "union_tag_invalid" else e["input"]
            kinds = ("debug", "local", "slurm")
            hint = did_you_mean(given, kinds) if isinstance(given, str) else ""
            problems.append(
                (
                    "executor",
                    f"expected one of {', '.join(map(repr, kinds))} (a kind, or a "
                    f"mapping with kind: and its settings), got {given!r}{hint}",
                )
            )
        elif e["type"] in ("union_tag_not_found", "union_tag_invalid") and loc[:2] == ["search", "space"]:
            problems.append(
                (
                    join_path(*loc),
                    "expected a mapping with type: float, int or categorical (or a list of choices), got "
                    f"{e['input']!r}",
                )
            )
        else:
            got = "" if e["type"] == "missing" else f", got {e['input']!r}"
            problems.append((join_path(*loc), f"{e['msg'].lower()}{got}"))
    return problems


Location = tuple[str | int, ...]


def unknown_keys(err: ValidationError) -> list[tuple[Location, str]]:
    """(where, key) of each unknown key pydantic reported: where is its mapping's location."""
    return [(tuple(e["loc"]), e["ctx"]["key"]) for e in err.errors() if e["type"] == "unknown_key"]


def without_keys(raw: dict, keys: list[tuple[Location, str]]) -> dict:
    """A copy of the file's mapping without `keys`. A location may name a discriminator's tag (the
    executor's kind, a parameter's type), which is no key of the file: it is stepped over."""
    out = copy.deepcopy(raw)
    for where, key in keys:
        node: Any = out
        for part in where:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int):
                node = node[part]
        if isinstance(node, dict):
            node.pop(key, None)
    return out
