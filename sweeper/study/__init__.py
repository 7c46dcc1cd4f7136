"""Study files, read once: YAML (loading), configs and cell keys (config), the schema (schema, with
pydantic's errors translated by problems), and the expansion (expand) into the study as data
(expanded): axes and seeds (axes), rules and the baseline (rules), then cells (cells) or a
search's plan (search_plan).

Everything else in sweeper reads a study through `load_study` / `parse_study`.
"""

from sweeper.study.config import SEED_AXIS, canonical, cell_key, merge, set_path
from sweeper.study.expand import is_study_file, load_study, parse_study, study_name
from sweeper.study.expanded import TRIAL_LABEL, Axis, Cell, SearchPlan, Study
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
from sweeper.study.search_plan import as_choice, sampler_class

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
    "is_study_file",
    "study_name",
]
