"""Study files, read once: YAML (loading), configs and cell keys (config), the schema (schema, with
pydantic's errors translated by problems), and the expansion into cells or a search's plan (expand).

Everything else in sweeper reads a study through `load_study` / `parse_study`.
"""

from sweeper.study.config import SEED_AXIS, canonical, cell_key, merge, set_path
from sweeper.study.expand import (
    TRIAL_LABEL,
    Axis,
    Cell,
    SearchPlan,
    Study,
    as_choice,
    load_study,
    parse_study,
    sampler_class,
    study_name,
)
from sweeper.study.loading import load_yaml
from sweeper.study.schema import (
    CategoricalParam,
    DebugExecutor,
    FloatParam,
    IntParam,
    LocalExecutor,
    Report,
    Retry,
    Search,
    SlurmExecutor,
    StudyFile,
)

__all__ = [
    "SEED_AXIS",
    "TRIAL_LABEL",
    "Axis",
    "CategoricalParam",
    "Cell",
    "DebugExecutor",
    "FloatParam",
    "IntParam",
    "LocalExecutor",
    "Report",
    "Retry",
    "Search",
    "SearchPlan",
    "SlurmExecutor",
    "Study",
    "StudyFile",
    "as_choice",
    "canonical",
    "cell_key",
    "load_study",
    "load_yaml",
    "merge",
    "parse_study",
    "sampler_class",
    "set_path",
    "study_name",
]
