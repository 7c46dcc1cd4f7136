"""The study file's schema (pydantic, strict: an unknown key is an error with a did-you-mean)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sweeper.errors import did_you_mean
from sweeper.study.config import canonical

TASK_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"


class _Strict(BaseModel):
    """Rejects unknown keys with a did-you-mean, before pydantic's own checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key{hint}; expected one of: {fields}",
                        {
                            "key": str(key),
                            "hint": did_you_mean(str(key), fields),
                            "fields": ", ".join(fields),
                        },
                    )
        return data


class ResourceSet(_Strict):
    """Per-cell job resources; names follow submitit's SLURM parameters."""

    # A job's time limit on SLURM (rounded up to whole minutes); a cell's on a local lane.
    timeout_min: PositiveFloat | None = None
    nodes: PositiveInt | None = None
    gpus_per_node: int | None = Field(default=None, ge=0)
    tasks_per_node: PositiveInt | None = None
    cpus_per_task: PositiveInt | None = None
    mem_gb: float | None = Field(default=None, gt=0)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool | None = None
    sbatch: dict[str, str | int | float | bool] | None = (
        None  # extra #SBATCH options, passed through submitit
    )

    def resolved(self) -> dict:
        return self.model_dump(exclude_none=True)


class ResourceRule(_Strict):
    when: dict[str, Any]
    set: ResourceSet


class Resources(_Strict):
    default: ResourceSet = ResourceSet()
    overrides: list[ResourceRule] = []


class DebugExecutor(_Strict):
    kind: Literal["debug"]


class LocalExecutor(_Strict):
    kind: Literal["local"]
    parallelism: PositiveInt = 1


class SlurmExecutor(_Strict):
    kind: Literal["slurm"]
    array_parallelism: PositiveInt = 256
    max_array_size: PositiveInt | None = None  # None: ask the cluster (MaxArraySize)
    signal_delay_s: int = Field(default=120, ge=0)
    cells_per_job: PositiveInt = 1  # >1 packs short cells into one array task: one start-up for several


class Retry(_Strict):
    """`sweeper resume` policy: attempts per cell, and memory growth after an out-of-memory kill."""

    max_attempts: PositiveInt = 3
    oom_memory_factor: float | None = Field(default=None, gt=1)


Executor = Annotated[DebugExecutor | LocalExecutor | SlurmExecutor, Field(discriminator="kind")]


# ----------------------------------------------------------------------------- search


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise PydanticCustomError(
                "param", "log and step cannot be combined (optuna samples one or the other)"
            )
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: PositiveInt = 1

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise PydanticCustomError("param", "log needs step 1")
        return self


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool | None] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        seen = [canonical(c) for c in self.choices]
        if len(set(seen)) != len(seen):
            raise PydanticCustomError("param", "duplicate choices in {choices}", {"choices": self.choices})
        return self


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise PydanticCustomError(
            "param", "expected low < high, got low={low}, high={high}", {"low": low, "high": high}
        )
    if log and low <= 0:
        raise PydanticCustomError("param", "a log scale needs low > 0, got {low}", {"low": low})


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class _Pruner(_Strict):
    metric: str | None = None  # the ctx.report value it watches (default: search.metric)
    direction: Literal["minimize", "maximize"] | None = None  # of that value (default: search.direction)


class MedianPruner(_Pruner):
    kind: Literal["median"]
    n_startup_trials: int = Field(default=5, ge=0)
    n_warmup_steps: int = Field(default=0, ge=0)
    interval_steps: PositiveInt = 1


class PercentilePruner(MedianPruner):
    kind: Literal["percentile"]  # type: ignore[assignment]
    percentile: float = Field(default=25.0, gt=0, lt=100)


class SuccessiveHalvingPruner(_Pruner):
    kind: Literal["successive_halving"]
    min_resource: PositiveInt | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=4, ge=2)
    min_early_stopping_rate: int = Field(default=0, ge=0)


class HyperbandPruner(_Pruner):
    kind: Literal["hyperband"]
    min_resource: PositiveInt = 1
    max_resource: PositiveInt | Literal["auto"] = "auto"
    reduction_factor: int = Field(default=3, ge=2)


Pruner = Annotated[
    MedianPruner | PercentilePruner | SuccessiveHalvingPruner | HyperbandPruner, Field(discriminator="kind")
]


class Search(_Strict):
    """The `search:` block: one optuna search per group, each trial a cell."""

    metric: str = Field(min_length=1)
    direction: Literal["minimize", "maximize"]
    space: dict[str, Param] = Field(min_length=1)  # config path -> distribution
    trials: PositiveInt  # the budget of each group
    sampler: Literal["tpe", "random", "grid", "gp", "cmaes"] = "tpe"
    sampler_options: dict[str, Any] = {}  # keyword arguments of the optuna sampler
    seed: int = 0
    parallel: PositiveInt | None = None  # trials in flight at once (default: see SearchPlan.parallel)
    group_by: list[str] | None = None  # axes with a search each (default: all); the others are searched over
    pruner: Pruner | None = None
    final_seeds: PositiveInt | list[int] | None = (
        None  # repeat each group's best configuration with these seeds
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """A list is a categorical parameter; `pruner: median` is a pruner with its defaults."""
        if isinstance(data, dict):
            data = dict(data)
            if isinstance(data.get("space"), dict):
                data["space"] = {
                    k: {"type": "categorical", "choices": v} if isinstance(v, list) else v
                    for k, v in data["space"].items()
                }
            if isinstance(data.get("pruner"), str):
                data["pruner"] = {"kind": data["pruner"]}
        return data


class Report(_Strict):
    """The `report:` block: how `sweeper report` reads the study's metrics."""

    # metric glob -> which way is better; the first glob that matches wins, before the built-in
    # guesses (sweeper.report.direction); `none` means never judged (no best, no coloured delta)
    directions: dict[str, Literal["min", "max", "none"]] = {}


class StudyFile(_Strict):
    study: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=128)
    description: str = ""
    task: str = Field(pattern=TASK_PATTERN)
    check: str | None = Field(
        default=None, pattern=TASK_PATTERN
    )  # config -> list of problems, run before submitting
    rehearse: str | None = Field(
        default=None, pattern=TASK_PATTERN
    )  # plan/run of `sweeper rehearse` (sweeper.run.rehearse)
    base: dict[str, Any] = {}
    axes: dict[str, Any] = {}
    seeds: Any = 1  # a count or a list; checked by the expander for a clearer message
    exclude: list[dict[str, Any]] = []
    include: list[dict[str, Any]] = []
    baseline: Any = None  # a variant name or {axis: label}; checked against the axes
    resources: Resources = Resources()
    executor: Executor = LocalExecutor(kind="local")
    retry: Retry = Retry()
    workdir: str = "runs"
    search: Search | None = None
    report: Report = Report()

    @model_validator(mode="before")
    @classmethod
    def _executor_kind(cls, data: Any) -> Any:
        """`executor: local` is `executor: {kind: local}` with its defaults."""
        if isinstance(data, dict) and isinstance(data.get("executor"), str):
            data = dict(data) | {"executor": {"kind": data["executor"]}}
        return data
