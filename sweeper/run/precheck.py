"""Import a study's task and run its `check` over its configs in a child process, before
anything is recorded or submitted.

The controller never imports the study's code (design.md: `sweeper` knows nothing about the
task); the child, `python -m sweeper.run.precheck TASK [CHECK]`, imports the task (a task that
cannot be imported would otherwise fail inside every job), reads the configs as JSON on stdin
and writes, for each, the list of problems the check found.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

from sweeper.errors import UserError

if TYPE_CHECKING:  # the child imports this module too: it pays for the task, not for pydantic
    from sweeper.study import Cell, Study


def precheck(study: Study, cells: list[Cell]) -> None:
    """Raise one UserError saying that the task cannot be imported, or listing the problems
    `study.check` finds, naming the cells; else return."""
    from sweeper.study import canonical

    if not cells:
        return
    unique: dict[str, Cell] = {}
    for cell in cells:  # configs that differ only by seed need one look
        unique.setdefault(canonical({k: v for k, v in cell.config.items() if k != "seed"}), cell)
    payload = json.dumps([c.config for c in unique.values()] if study.check else [])
    command = [
        sys.executable,
        "-m",
        "sweeper.run.precheck",
        study.task,
        *([study.check] if study.check else []),
    ]
    proc = subprocess.run(command, input=payload, capture_output=True, text=True, timeout=600)
    if proc.returncode == _UNIMPORTABLE:
        what, _, error = proc.stderr.strip().splitlines()[-1].partition(": ")
        raise UserError(
            f"{study.file}: {what}: cannot import {getattr(study, what)!r}: {error}; "
            "nothing was recorded or submitted"
        )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise UserError(f"{study.file}: check: {study.check} could not run:\n{tail}")
    found: dict[str, list[Cell]] = {}  # one line per problem, however many cells share it
    for cell, problems in zip(unique.values(), json.loads(proc.stdout), strict=False):
        for problem in problems:
            found.setdefault(problem, []).append(cell)
    if found:
        lines = []
        for problem, where in found.items():
            example = "{" + ", ".join(f"{k}={v}" for k, v in where[0].labels.items() if k != "seed") + "}"
            scope = f"cell {example}" if len(where) == 1 else f"{len(where)} configs, e.g. cell {example}"
            lines.append(f"{study.file}: {scope}: {problem}")
        raise UserError(
            "the study's check found problems; nothing was recorded or submitted\n" + "\n".join(lines)
        )


_UNIMPORTABLE = 3  # the child's exit code when the task or the check cannot be imported


def main() -> None:
    from sweeper.task import import_object

    loaded = []
    for what, spec in zip(("task", "check"), sys.argv[1:], strict=False):
        try:
            loaded.append(import_object(spec))
        except Exception as err:  # ImportError, AttributeError, a SyntaxError in the module...
            print(f"{what}: {type(err).__name__}: {err}", file=sys.stderr)
            sys.exit(_UNIMPORTABLE)
    check = loaded[1] if len(loaded) > 1 else None
    configs = json.load(sys.stdin)
    json.dump([list(check(config)) if check else [] for config in configs], sys.stdout)


if __name__ == "__main__":
    main()
