"""The trial task ``model.experiment:run``: a cell's config -> pretraining -> evaluations -> metrics.

Stages are cached separately (design.md §3):

- pretraining is keyed by :func:`training_key` (model, framework, data, train, seed; not eval) and
  lives in ``<cache>/pretrain/<training key>/`` where ``<cache>`` is ``ctx.cache_dir`` (shared by the
  cells of a study) or, without one, the cell's run directory. Cells that differ only in their
  evaluations re-use one backbone; cells sharing a training key that start together serialise on
  an ``fcntl.flock`` of ``.lock`` in that directory, so one trains and the others then load it;
- each evaluation is keyed by :func:`eval_key` (training key, eval name, its resolved config) and
  its metrics are a small JSON ``<cache>/eval/<eval key>.json``, so re-running an unchanged
  evaluation is free and adding one to a study runs only that one.

Metrics are flat: ``<eval>.<dataset>.<metric>`` (e.g. ``knn.procedural.top1``,
``analysis.procedural.block3.attn_cls_entropy``), plus ``params.total``, ``params.extra``,
``params.extra_pct``, ``flops.fwd``, ``flops.fwd_bwd`` and the pretraining's ``pretrain.*``.

``runtime`` holds settings that do not change the results and so stay out of the training key:
``runtime.threads`` caps torch's intra-op threads of the cell. The local executor runs several
cells side by side with nothing pinning them, and torch would otherwise start one thread per core
in each, oversubscribing the machine (2 cells x 2 threads on 2 cores run slower than 2 x 1).

Standalone: ``python -m model.experiment config.yaml [--run-dir DIR] [--cache-dir DIR]``;
``--print-config`` prints the resolved config with the source of each value instead. Given a study
file, ``--cell model.scale=large,framework.name=deit3`` picks one of its cells.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from timm.models.vision_transformer import VisionTransformer

from model.config import ConfigError, ModelConfig, RuntimeConfig, TrainConfig, data_model, validate
from model.data import DatasetError, check_root
from model.eval import EvalConfig, EvalError, parse_eval, run_eval
from model.recipes import default_recipe, resolve
from model.vit import SCALES, Spec, SpecError, flops, param_report
from sweeper.task import TaskContext as Context

TRAINING_KEYS: tuple[str, ...] = ("model", "framework", "data", "train", "seed")
# Bump when an evaluation's protocol changes in a way its config does not show: old results
# then miss the cache instead of being mixed with new ones.
EVAL_PROTOCOL_VERSION = 1


class LocalContext:
    """The context of a standalone run: metrics appended to ``run_dir/metrics.jsonl`` by rank 0, no
    checkpoint requests (there is no scheduler to ask for one). Under torchrun, ``rank`` is the
    process's (RANK): only rank 0 takes the pretraining lock, which the others would otherwise
    wait on while rank 0 waits for them in DDP's first collective."""

    def __init__(self, run_dir: Path, cache_dir: Path | None = None, echo: bool = False) -> None:
        self.run_dir, self.cache_dir, self.echo = Path(run_dir), cache_dir and Path(cache_dir), echo
        self.rank = int(os.environ.get("RANK", "0"))
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def report(self, step: int, metrics: dict[str, float], total: int | None = None) -> None:
        if self.rank != 0:
            return
        line = json.dumps(
            {"step": int(step), "time": time.time(), "metrics": metrics}
            | ({"total": int(total)} if total is not None else {})
        )
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(line + "\n")
        if self.echo:
            print(f"step {step}: {len(metrics)} metrics", file=sys.stderr)

    def checkpoint_if_requested(self, save: Callable[[], None]) -> None:
        return None


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_key(config: Mapping[str, Any]) -> str:
    """Hash of the config parts that change the pretrained backbone (never ``eval``), as resolved:
    the recipe applied and every typed default filled in (:func:`describe`'s values).

    Hashing the config as written would give one backbone two keys (a study spelling out a
    preset's or a default's value, another omitting it: trained twice) and, worse, keep a key when
    a preset or a default changes, so that a cached backbone trained with the old values would be
    reused. Resolved, any change to what trains changes the key; a new option changes every key
    once (a cache miss, never a wrong hit). The specialization is keyed by the blocks it builds,
    so ``qkv: first_third`` and ``qkv: 1`` of a 4-block model share one backbone. A config that
    does not resolve is hashed as written (its run fails in ``check`` or ``pretrain`` with the
    message)."""
    try:
        resolved = {
            path: value
            for path, value, _ in describe(config)
            if path.partition(".")[0] in ("model", "framework", "train") and path != "framework.recipe"
        }
        data = dict(config.get("data") or {"name": "procedural"})  # model.train's default
        resolved["data"] = data_model(str(data.get("name"))).model_validate(data).model_dump()
        resolved["seed"] = int(config.get("seed", 0))
        depth = resolved["model.depth"] or SCALES[resolved["model.scale"]]["depth"]
        resolved["model.specialize"] = Spec.parse(resolved["model.specialize"]).canonical(depth)
    except (ConfigError, SpecError, ValueError, TypeError):  # pydantic's ValidationError is a ValueError
        return _hash({k: config.get(k) for k in TRAINING_KEYS})
    return _hash(resolved)


def eval_key(train_key: str, config: EvalConfig) -> str:
    """Hash of (training key, evaluation name, its resolved config with defaults filled in)."""
    return _hash(
        {
            "training_key": train_key,
            "eval": config.name,
            "config": config.to_dict(),
            "protocol": EVAL_PROTOCOL_VERSION,
        }
    )


def parse_evals(config: Mapping[str, Any]) -> dict[str, EvalConfig]:
    """Every ``eval.<name>`` of the config, validated; EvalError names the first bad key."""
    evals = config.get("eval") or {}
    if not isinstance(evals, Mapping):
        raise EvalError(f"eval: got {type(evals).__name__}; expected a mapping name -> eval config")
    return {name: parse_eval(name, raw, config.get("data")) for name, raw in evals.items()}


SECTIONS = ("model", "framework", "data", "train", "eval", "runtime", "seed")


def _collect(problems: list[str], fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a ConfigError or ValueError becomes problems (one per line) and None."""
    try:
        return fn()
    except ConfigError as err:
        problems.extend(err.problems)
    except (DatasetError, SpecError, ValueError) as err:
        problems.append(str(err))
    return None


def _check_root(where: str, name: str, root: Any, splits: tuple[str, ...]) -> list[str]:
    if root is not None and not Path(str(root)).is_absolute():
        return [
            f"{where}.root: {root!r} is relative, but the task runs in its run directory; "
            "give an absolute path"
        ]
    try:
        check_root(name, root, splits=splits)
    except (DatasetError, ValueError) as err:
        return [f"{where}: {err}"]
    return []


def check(config: Mapping[str, Any]) -> list[str]:
    """Every problem of a cell's config the orchestrator can show before submitting, one line
    each naming its key path: unknown keys (with a did-you-mean), wrong types and out-of-range
    values in every section (model.config, the framework's options, the dataset's keyword
    arguments, evaluations), an unknown recipe, framework or dataset, dataset roots that are
    relative or cannot serve the needed splits, and a model that cannot be built (_check_build)."""
    from model.frameworks import framework_class

    problems: list[str] = []
    for key in config:
        if key not in SECTIONS:
            close = difflib.get_close_matches(str(key), SECTIONS, n=1)
            problems.append(
                f"{key}: unknown section"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" (expected: {', '.join(SECTIONS)})"
            )
    for key in ("model", "data", "train"):
        if not isinstance(config.get(key), Mapping):
            problems.append(f"{key}: missing or not a mapping")
    framework_cfg = config.get("framework") or {}
    if not isinstance(framework_cfg, Mapping):
        return [*problems, "framework: not a mapping"]
    name = str(framework_cfg.get("name", "dinov2"))
    known = _known_frameworks()
    if known is not None and name not in known:
        problems.append(
            f"framework.name: unknown framework {name!r}; expected one of {', '.join(sorted(known))}"
        )
        return problems
    recipe = _collect(problems, lambda: resolve(config)[0])
    resolved = recipe or config
    if isinstance(resolved.get("model"), Mapping):
        _collect(problems, lambda: validate(ModelConfig, resolved["model"], "model"))
    if isinstance(resolved.get("train"), Mapping):
        train = _collect(problems, lambda: validate(TrainConfig, resolved["train"], "train"))
        if recipe and train is not None and train.steps is None and train.epochs is None:
            problems.append("train: set steps (optimizer steps in total) or epochs")
    options = {k: v for k, v in (resolved.get("framework") or {}).items() if k not in ("name", "recipe")}
    _collect(problems, lambda: validate(framework_class(name).Options, options, "framework"))
    _collect(problems, lambda: validate(RuntimeConfig, config.get("runtime"), "runtime"))
    if not problems:  # the model's own sections are valid: can it be built?
        problems += _check_build(resolved)
    data_cfg = config.get("data")
    if isinstance(data_cfg, Mapping):
        data_name = str(data_cfg.get("name"))
        try:
            cls = data_model(data_name)
        except ValueError as err:
            problems.append(f"data.name: {err}")
        else:
            _collect(problems, lambda: validate(cls, data_cfg, "data"))
            problems += _check_root("data", data_name, data_cfg.get("root"), ("train",))
    try:
        evals = parse_evals(config)
    except EvalError as err:
        return [*problems, str(err)]
    for eval_name, cfg in evals.items():
        problems += _check_root(
            f"eval.{eval_name}", cfg.dataset, cfg.dataset_kwargs.get("root"), (cfg.train_split, cfg.val_split)
        )
    return problems


def _check_build(resolved: Mapping[str, Any]) -> list[str]:
    """Build the framework and its backbone on the meta device (no memory, no compute): what only
    the model can tell, such as a spec naming a component the model lacks (``ls1`` without
    LayerScale), a block past its depth or registers routed when there are none, is refused at
    plan time instead of in every job. Built once per distinct (model, framework)."""
    key = _hash([resolved.get("model"), resolved.get("framework")])
    if key not in _BUILT:
        from model.frameworks import build_framework

        try:
            with torch.device("meta"):
                build_framework(
                    resolved["model"], resolved.get("framework") or {}, num_classes=1000, total_steps=1
                )
            _BUILT[key] = []
        except (SpecError, ConfigError, ValueError, TypeError) as err:
            _BUILT[key] = [f"model: cannot be built: {err}"]
    return _BUILT[key]


_BUILT: dict[str, list[str]] = {}


def _known_frameworks() -> set[str] | None:
    """Framework names model.frameworks registers (``FRAMEWORKS``), or None when it cannot say."""
    try:
        from model.frameworks import FRAMEWORKS
    except ImportError:
        return None
    return set(FRAMEWORKS)


@contextmanager
def _exclusive(directory: Path, enabled: bool) -> Iterator[None]:
    """Hold an exclusive flock on ``directory/.lock`` (blocking) while the body runs."""
    directory.mkdir(parents=True, exist_ok=True)
    if not enabled:
        yield
        return
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_json(path: Path, value: Any) -> None:
    """Write-to-temp + rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _model_metrics(model: VisionTransformer, img_size: int) -> dict[str, float]:
    report = param_report(model)
    # FLOPs on a meta copy: instant, and the frozen (requires_grad=False) backbone stays untouched.
    meta = copy.deepcopy(model).to("meta").requires_grad_(True)
    counted = flops(meta, img_size)
    return {
        "params.total": float(report.total),
        "params.extra": float(report.extra),
        "params.extra_pct": float(report.extra_pct),
        "flops.fwd": float(counted.forward),
        "flops.fwd_bwd": float(counted.forward_backward),
    }


def run(config: Mapping[str, Any], ctx: Context | None = None) -> dict[str, float]:
    """Pretrain (or load the pretrained backbone of the same training key), run every configured
    evaluation (or read its cached result) and return the flat metrics."""
    from model.train import pretrain  # imported here so that check() never needs the trainer

    ctx = ctx if ctx is not None else LocalContext(Path.cwd())
    evals = parse_evals(config)  # fail on a bad eval config before hours of training
    threads = validate(RuntimeConfig, config.get("runtime"), "runtime").threads
    if threads is not None:
        torch.set_num_threads(threads)
    progress = True  # a bar in a terminal; in a cell's log, plain lines (model.train, model.eval)
    rank = getattr(ctx, "rank", 0)
    train_key = training_key(config)
    cache_dir = getattr(ctx, "cache_dir", None)
    root = Path(cache_dir) if cache_dir else Path(ctx.run_dir)

    # Only rank 0 of a multi-process job takes the lock: the other ranks must not queue behind it,
    # they meet rank 0 in pretrain's collectives.
    pretrain_dir = root / "pretrain" / train_key
    with _exclusive(pretrain_dir, enabled=rank == 0):
        model, pretrain_metrics = pretrain(dict(config), pretrain_dir, ctx=ctx, progress=progress)
    step = int(pretrain_metrics.get("pretrain.steps", 0))
    metrics = {k: float(v) for k, v in pretrain_metrics.items()}
    img_size = resolve(config)[0]["model"].get("img_size", 224)
    metrics.update(_model_metrics(model, int(img_size)))
    ctx.report(step, metrics)

    features: dict = {}  # shared by evaluations on the same dataset/split/size within this run
    for name, eval_cfg in evals.items():
        ctx.checkpoint_if_requested(lambda: None)  # finished evaluations are already cached
        path = root / "eval" / f"{eval_key(train_key, eval_cfg)}.json"
        if path.exists():
            result = json.loads(path.read_text())["metrics"]
        else:
            started = time.perf_counter()
            result = run_eval(model, eval_cfg, cache=features, progress=progress)
            if rank == 0:
                _write_json(
                    path,
                    {
                        "eval": name,
                        "training_key": train_key,
                        "config": eval_cfg.to_dict(),
                        "seconds": time.perf_counter() - started,
                        "metrics": result,
                    },
                )
        metrics.update({f"{name}.{eval_cfg.dataset}.{metric}": float(v) for metric, v in result.items()})
        ctx.report(step, metrics)
    return metrics


def _print_table(metrics: Mapping[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:,.0f}" if abs(value) >= 1e5 else f"{value:.4g}")
    Console().print(table)


def describe(config: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(key path, resolved value, source) for every key of the cell: ``preset <recipe>``,
    ``study`` (set by the config) or ``default`` (the typed section's default)."""
    from model.frameworks import framework_class

    resolved, sources = resolve(config)
    name = str(resolved["framework"].get("name", "dinov2"))
    options = {k: v for k, v in resolved["framework"].items() if k not in ("name", "recipe")}
    typed = {
        "model": validate(ModelConfig, resolved.get("model"), "model").model_dump(),
        "framework": {
            "name": name,
            "recipe": resolved["framework"].get("recipe"),
            **validate(framework_class(name).Options, options, "framework").model_dump(),
        },
        "train": validate(TrainConfig, resolved.get("train"), "train").model_dump(),
        "runtime": validate(RuntimeConfig, config.get("runtime"), "runtime").model_dump(),
    }
    rows = []
    for section, values in typed.items():
        for key, value in values.items():
            path = f"{section}.{key}"
            source = "study" if key in (config.get(section) or {}) else sources.get(path, "default")
            if path == "framework.recipe" and value is None:
                value, source = resolved["framework"].get("recipe") or default_recipe(name), "default"
            rows.append((path, value, source))
    for section in ("data", "eval", "seed"):
        if section in config:
            rows.append((section, config[section], "study"))
    return rows


def _study_cell(path: Path, wanted: str | None) -> dict[str, Any]:
    """The config of the first cell of study ``path`` whose axis labels match ``wanted``
    (``axis=label,...``), through the orchestrator's own expansion (sweeper.spec)."""
    from sweeper.errors import UserError
    from sweeper.study import load_study

    try:
        study = load_study(path)
    except UserError as err:
        raise EvalError(str(err)) from None
    pairs = dict(item.split("=", 1) for item in (wanted or "").split(",") if "=" in item)
    for cell in study.cells:
        if all(str(cell.labels.get(axis)) == label for axis, label in pairs.items()):
            return dict(cell.config)
    raise EvalError(f"{path}: no cell has the labels {wanted!r}; axes: {', '.join(study.cells[0].labels)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model.experiment",
        description=(
            "Run one trial without the orchestrator: pretrain (or load), evaluate, print the metrics."
        ),
    )
    parser.add_argument("config", type=Path, help="a resolved cell config (YAML)")
    parser.add_argument("--run-dir", type=Path, default=None, help="default: runs/<training key>")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="shared stage cache (pretrained backbones, eval results); default: the run dir",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config, each value with its source (preset, study, default)",
    )
    parser.add_argument(
        "--cell",
        default=None,
        metavar="AXIS=LABEL,...",
        help="with a study file: the cell to print or run (default: the study's first cell)",
    )
    args = parser.parse_args(argv)
    try:
        config = yaml.safe_load(args.config.read_text())
        if isinstance(config, dict) and {"study", "base"} <= set(config):
            config = _study_cell(args.config, args.cell)
        if not isinstance(config, dict):
            raise EvalError(f"{args.config}: expected a mapping (model, framework, data, train, eval, seed)")
        problems = "\n".join(f"{args.config}: {p}" for p in check(config))
        if args.print_config:  # the config is worth seeing on a machine without the datasets too
            rows = describe(config)
            width = max(len(k) for k, _, _ in rows)
            for key, value, source in rows:
                print(f"{key:<{width}}  {json.dumps(value, default=str):<40}  {source}")
            if problems:
                print(f"problems:\n{problems}", file=sys.stderr)
            return
        if problems:
            raise EvalError(problems)
        run_dir = args.run_dir or Path("runs") / training_key(config)
        metrics = run(config, LocalContext(run_dir, args.cache_dir, echo=not args.json))
    except (OSError, yaml.YAMLError, EvalError, SpecError, DatasetError, ConfigError) as err:
        parser.exit(2, f"error: {err}\n")
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        _print_table(metrics)


if __name__ == "__main__":
    main()
