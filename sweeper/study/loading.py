"""Reading a study file's YAML: safe loading, duplicate keys refused, line numbers kept."""

from __future__ import annotations

import re
from typing import Any

import yaml

from sweeper.errors import SpecError


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads `1e-3` as a float (YAML 1.2) and rejects duplicate keys."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (each name may appear once)", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, file: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:

        def at(mark: yaml.Mark | None) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""

        context = f" ({e.context} at {at(e.context_mark)})" if e.context and e.context_mark else ""
        raise SpecError(file, [(at(e.problem_mark), f"invalid YAML: {e.problem}{context}")]) from None
    except yaml.YAMLError as e:
        raise SpecError(file, [("", f"invalid YAML: {e}")]) from None
