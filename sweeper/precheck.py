"""Run a study's `check` function over its configs in a child process, before submitting.

The controller never imports the study's code (design.md: `sweeper` knows nothing about the
task); the check runs here, in `python -m sweeper.precheck module:function`, reading the
configs as JSON on stdin and writing, for each, the list of problems it found.
"""

from __future__ import annotations

import json
import subprocess
import sys

from sweeper.errors import UserError
from sweeper.spec import Cell, Study, canonical


def precheck(study: Study, cells: list[Cell]) -> None:
    """Raise one UserError listing the problems `study.check` finds, naming the cells; else return."""
    if not study.check or not cells:
        return
    unique: dict[str, Cell] = {}
    for cell in cells:  # configs that differ only by seed need one look
        unique.setdefault(canonical({k: v for k, v in cell.config.items() if k != "seed"}), cell)
    payload = json.dumps([c.config for c in unique.values()])
    proc = subprocess.run([sys.executable, "-m", "sweeper.precheck", study.check], input=payload,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise UserError(f"{study.file}: check: {study.check} could not run:\n{tail}")
    found: dict[str, list[Cell]] = {}  # one line per problem, however many cells share it
    for cell, problems in zip(unique.values(), json.loads(proc.stdout)):
        for problem in problems:
            found.setdefault(problem, []).append(cell)
    if found:
        lines = []
        for problem, where in found.items():
            example = "{" + ", ".join(f"{k}={v}" for k, v in where[0].labels.items() if k != "seed") + "}"
            scope = f"cell {example}" if len(where) == 1 else f"{len(where)} configs, e.g. cell {example}"
            lines.append(f"{study.file}: {scope}: {problem}")
        raise UserError("the study's check found problems; nothing was submitted\n" + "\n".join(lines))


def main() -> None:
    from sweeper.worker import import_object

    check = import_object(sys.argv[1])
    json.dump([list(check(config)) for config in json.load(sys.stdin)], sys.stdout)


if __name__ == "__main__":
    main()
