"""A study file read and expanded: validated by the schema, then its axes, rules and seeds resolved into
cells (sweeper.study.cells) or a search's plan (sweeper.study.search_plan).

Every problem of the file is gathered (Problems) and raised together, one line each, at the
first step that cannot go on without them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import (
    ValidationError,
)

from sweeper.errors import SpecError
from sweeper.study.axes import parse_factors, parse_seeds
from sweeper.study.cells import build_cells, check_signal_delay
from sweeper.study.config import SEED_AXIS, canonical, expand_dotted
from sweeper.study.expanded import Axis, Study
from sweeper.study.loading import load_yaml
from sweeper.study.problems import Problems, pydantic_problems, unknown_keys, without_keys
from sweeper.study.rules import baseline, rule
from sweeper.study.schema import StudyFile
from sweeper.study.search_plan import search_plan


def load_study(path: str | Path) -> Study:
    """Load, validate and expand a study file; raise SpecError naming every problem."""
    file = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise SpecError(file, [("", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(file, [("", f"cannot read: {e}")]) from None
    return parse_study(text, file)


def is_study_file(study: str) -> bool:
    """Whether a command's study argument is a file (else it is a study's name)."""
    return study.endswith((".yaml", ".yml")) or Path(study).is_file()


def study_name(study: str) -> str:
    """A study is named by its name, or by its file (whose `study:` key is read)."""
    return load_study(study).name if is_study_file(study) else study


def parse_study(text: str, file: str = "<study>", *, cells: bool = True) -> Study:
    """Validate and expand a study's text. cells=False reads its axes, baseline and settings without
    making its cells (nor a search's plan): what a report of a recorded study needs, at a fraction
    of the cost for 10,000 cells."""
    raw = load_yaml(text, file)
    if not isinstance(raw, dict):
        raise SpecError(file, [("", "expected a mapping with keys study, task, base, axes, …")])
    return expand(validate_file(raw, file), file, text, raw, cells)


def validate_file(raw: dict, file: str) -> StudyFile:
    """The validated file, or one SpecError naming all its problems. An unknown key stops the checks
    of the rest of its mapping, so the file is validated again without the unknown keys until no
    new one is found: a typo never hides a bad value beside it."""
    found: list[tuple[str, str]] = []
    while True:
        try:
            spec = StudyFile.model_validate(raw)
        except ValidationError as e:
            found += [p for p in pydantic_problems(e) if p not in found]
            unknown = unknown_keys(e)
            if not unknown:
                raise SpecError(file, found) from None
            raw = without_keys(raw, unknown)
        else:
            if found:
                raise SpecError(file, found)
            return spec


def expand(spec: StudyFile, file: str, text: str, raw: dict, with_cells: bool = True) -> Study:
    """The study a validated file describes; its cells (or search plan) only when `with_cells`."""
    p = Problems(file)
    base = expand_dotted(spec.base, "base", p.found)
    if SEED_AXIS in base:
        p.add("base.seed", "the seed is set by the top-level 'seeds' key; remove it from base")
    seeds = parse_seeds(p, spec.seeds)
    factors = parse_factors(p, spec.axes, base)
    p.raise_any()
    axes = [axis for factor in factors for axis in factor]
    ruled = axes + [Axis(SEED_AXIS, tuple(seeds), tuple(seeds), named=False)]
    include = [rule(p, r, f"include[{i}]", ruled) for i, r in enumerate(spec.include)]
    exclude = [rule(p, r, f"exclude[{i}]", ruled) for i, r in enumerate(spec.exclude)]
    overrides = [
        (rule(p, o.when, f"resources.overrides[{i}].when", ruled), o.set.resolved())
        for i, o in enumerate(spec.resources.overrides)
    ]
    reference = baseline(p, spec.baseline, axes)
    if spec.search and len(seeds) > 1:
        p.add(
            "seeds",
            "a search runs each trial with one seed; repeat the best configuration "
            "with search.final_seeds instead",
        )
    p.raise_any()
    cells = build_cells(p, spec, base, factors, seeds, include, exclude, overrides) if with_cells else []
    check_signal_delay(p, spec, cells)
    p.raise_any()
    search = None
    if spec.search and with_cells:
        search = search_plan(p, spec, spec.search, base, axes, cells)
        p.raise_any()
        cells = []
    return Study(
        name=spec.study,
        description=spec.description,
        task=spec.task,
        check=spec.check,
        file=file,
        text=text,
        spec_hash=hashlib.sha256(canonical(raw).encode()).hexdigest()[:16],
        axes=axes,
        seeds=seeds,
        cells=cells,
        baseline=reference,
        executor=spec.executor,
        retry=spec.retry,
        workdir=spec.workdir,
        search=search,
        warnings=p.warnings,
        rehearse=spec.rehearse,
        report=spec.report,
    )
