"""Small tasks with the trial contract `task(config, ctx) -> metrics`, for the orchestrator tests."""

from __future__ import annotations

import json
import os
import signal
import time
from types import SimpleNamespace


def _log_start(config: dict, ctx, extra: str = "") -> None:
    """Append one line per execution to a shared file, so tests can count runs per cell."""
    if config.get("log"):
        with open(config["log"], "a") as f:
            f.write(f"{ctx.key} {os.getpid()} {extra}\n")


def echo(config: dict, ctx) -> dict:
    _log_start(config, ctx)
    time.sleep(config.get("sleep", 0))
    return {"score": config["x"] * 2 + config["seed"], "seed": config["seed"]}


def steps(config: dict, ctx) -> dict:
    """A resumable loop: a checkpoint every `every` steps and whenever the scheduler asks."""
    path = ctx.run_dir / "ckpt.json"
    start = json.loads(path.read_text())["step"] if path.exists() else 0
    _log_start(config, ctx, f"from={start}")
    step = start

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step}))
        os.replace(tmp, path)

    while step < config["steps"]:
        time.sleep(config.get("dt", 0.05))
        step += 1
        ctx.report(step, {"loss": 1.0 / step}, total=config["steps"])
        if step % config.get("every", 10) == 0:
            save()
        ctx.checkpoint_if_requested(save)
    return {"steps": step, "resumed_from": start}


def boom(config: dict, ctx) -> dict:
    _log_start(config, ctx)
    raise ValueError(f"bad value x={config['x']}")


class NonFiniteLoss(RuntimeError):
    pass


def nan(config: dict, ctx) -> dict:
    raise NonFiniteLoss("loss is nan at step 3")


def oom(config: dict, ctx) -> dict:
    raise MemoryError("CUDA out of memory")


def check(config: dict) -> list[str]:
    """A study's pre-submission check: a data root that must exist."""
    root = config.get("root")
    return [] if root is None or os.path.isdir(root) else [f"root: {root} does not exist"]


def threads(config: dict, ctx) -> dict:
    return {"omp_threads": float(os.environ.get("OMP_NUM_THREADS", "0"))}


def bowl(config: dict, ctx) -> dict:
    """An analytic objective for the search tests: 0 at x=0.7, y=-1.2, lr=1e-3, growing around it."""
    import math

    _log_start(config, ctx)
    time.sleep(config.get("sleep", 0))
    return {"f": (config["x"] - 0.7) ** 2 + (config["y"] + 1.2) ** 2 + (math.log10(config["lr"]) + 3) ** 2}


def curve(config: dict, ctx) -> dict:
    """A training curve flat at `x` (lower is better): a pruner stops the bad ones part-way."""
    _log_start(config, ctx)
    for step in range(1, config["steps"] + 1):
        time.sleep(config.get("dt", 0.05))
        ctx.report(step, {"val.loss": config["x"]})
    return {"val.loss": config["x"]}


def values(config: dict, ctx) -> dict:
    """Three reports and a result; `bad` ("nan", "inf", "-inf") goes into the report of step `at`, or,
    without `at`, into the result's `acc`, beside the finite values."""
    bad = float(config.get("bad", 1.0))
    for step in range(1, 4):
        ctx.report(step, {"loss": bad if step == config.get("at") else 1.0 / step, "lr": 0.1})
    return {"acc": bad if config.get("at") is None else 0.5, "params.M": 5.0}


def relative(config: dict, ctx) -> dict:
    """Writes a file by a relative path, as `torch.save(state, "ckpt")` does."""
    with open("ckpt", "w") as f:
        f.write(ctx.key)
    return {"cwd_is_run_dir": float(os.getcwd() == str(ctx.run_dir))}


def hog(config: dict, ctx) -> dict:
    """Holds `mb` MiB (every page written) for `hold_s` seconds: past a job's --mem, SLURM kills it."""
    _log_start(config, ctx)
    held = [b"\1" * (1 << 20) for _ in range(config["mb"])]
    time.sleep(config.get("hold_s", 4))
    return {"held_mb": float(len(held))}


def _rehearsal_plan(configs: list[dict], processes: list[int]) -> list[dict]:
    """One unit per value of x (configs that differ elsewhere share it); a job of several processes
    is rehearsed by 2."""
    units: dict = {}
    for i, config in enumerate(configs):
        unit = units.setdefault(
            config["x"],
            {"x": config["x"], "job": processes[i], "processes": min(processes[i], 2), "cells": []},
        )
        unit["cells"].append(i)
    return list(units.values())


def _rehearsal_run(unit: dict, *, steps: int, workdir, shared, stage) -> dict:
    """x=2 raises at stage train; x=3 holds 300 MB, then is killed as the OOM killer would. In a unit
    of several processes (torchrun's environment) only rank 1 does so, while the others wait as in a
    collective; there x=4's rank 1 never ends, and each rank holds 150 MB."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    stage("build")
    stage("train")
    failing = rank == 1 or world == 1
    if unit["x"] == 2 and failing:
        raise ValueError("x=2 is bad")
    if unit["x"] == 3 and failing:
        held = b"\x01" * (300 << 20)  # touched pages: they count in the RSS
        os.kill(os.getpid(), signal.SIGKILL)
        del held
    if unit["x"] in (2, 3) or (unit["x"] == 4 and rank == 1):
        time.sleep(600)
    if world == 1:
        return {"seconds_per_step": 0.25 * steps}
    held = b"\x01" * (150 << 20)
    return {
        "rank": rank,
        "world": world,
        "job": unit["job"],
        "held_mb": len(held) >> 20,
        "threads": int(os.environ["OMP_NUM_THREADS"]),
        "port": int(os.environ["MASTER_PORT"]),
    }


rehearsal = SimpleNamespace(plan=_rehearsal_plan, run=_rehearsal_run)
