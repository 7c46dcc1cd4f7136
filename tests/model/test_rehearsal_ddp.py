"""The rehearsal of a config whose job runs several processes: two real gloo ranks through
model.train's DDP (sweeper rehearse starts them), a failure in one rank named with its rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from model.data import build_dataset
from model.data.fixtures import write_fixture
from model.rehearsal import plan, run
from model.train import _SampleStream

ROOT = Path(__file__).resolve().parents[2]
SPECIALIZED = "{norm1: all, norm2: all, qkv: all, proj: all, fc1: all, fc2: all, final_norm: true}"
STUDY = """
study: ddp
task: model.experiment:run
rehearse: model.rehearsal:rehearsal
base:
  model: {scale: micro, img_size: 32, patch_size: 8, registers: 0, specialize: %s}
  framework: {name: deit3, recipe: cpu}
  data: %s
  train: {steps: 100, batch_size: 64}
  eval: {knn: {dataset: procedural, k: 5}}
axes:
  framework.name: %s
executor: slurm
resources:
  default: {nodes: 2, gpus_per_node: 2, tasks_per_node: 2}
"""


def _rehearse(tmp_path: Path, study: str) -> tuple[int, list[dict]]:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(study))
    proc = subprocess.run(
        [sys.executable, "-c", "from sweeper.cli import app; app()", "rehearse", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)["units"]


def test_plan_rehearses_each_world_size_apart_with_two_processes_at_most():
    config = {"model": {"scale": "micro"}, "framework": {"name": "deit3"}, "train": {}, "eval": {"knn": {}}}
    units = plan([config, config, config, config], [1, 4, 16, 4])
    assert [(u["world"], u["processes"], u["cells"]) for u in units] == [
        (1, 1, [0]),
        (4, 2, [1, 3]),
        (16, 2, [2]),
    ]
    assert [len(u["evals"]) for u in units] == [1, 0, 0]  # the same model: evaluated once


def test_a_global_batch_that_does_not_divide_over_the_job_s_processes_fails_at_train(tmp_path):
    config = {
        "model": {"scale": "micro", "img_size": 32, "patch_size": 8},
        "framework": {"name": "deit3", "recipe": "cpu"},
        "data": {"name": "procedural", "size": 16},
        "train": {"steps": 10, "batch_size": 64},
    }
    (unit,) = plan([config], [3])
    stages: list[str] = []
    with pytest.raises(
        ValueError, match="train.batch_size 64 is not divisible by the 3 processes of the job"
    ):
        run(unit, steps=2, workdir=tmp_path / "w", shared=tmp_path / "s", stage=stages.append)
    assert stages == ["data", "train"]


def test_a_job_of_2_nodes_x_2_gpus_is_rehearsed_by_two_ddp_ranks(tmp_path):
    # A CLS-only loss (deit3) on a model whose last block and final norm are specialized: two DDP
    # steps in a row (DDP fails on a parameter without gradient at the second), a checkpoint saved by
    # rank 0 and restored by both, k-NN on both ranks.
    data = "{name: procedural, num_classes: 4, size: 64}"
    code, units = _rehearse(tmp_path, STUDY % (SPECIALIZED, data, "[deit3]"))
    assert code == 0, units
    assert [(u["processes"], u["stage"], u["ok"], u["figures"]["ranks"]) for u in units] == [
        (2, "done", True, 2)
    ]


def test_a_failure_in_rank_1_alone_is_named_with_its_rank(tmp_path):
    # A corrupt image in the data, which only rank 1 reads in the first step (ranks take alternate
    # positions of the global batch): rank 0 waits for it in DDP's collective and is ended.
    root = write_fixture("imagefolder", tmp_path / "imagenet", images=2)
    dataset = build_dataset("imagefolder", "train", root=root)
    order = _SampleStream(dataset, lambda s: s, seed=0)._order(0)  # 4 images: one step of 2 x 2
    corrupt = Path(dataset.folder.samples[int(order[1])][0])
    corrupt.write_bytes(b"not a JPEG")
    data = "{name: imagefolder, root: %s}" % root
    code, (unit,) = _rehearse(tmp_path, STUDY % ("{}", data, "[deit3]"))
    assert code == 1 and unit["processes"] == 2 and not unit["ok"]
    assert unit["stage"] == "train" and unit["error"].startswith("rank 1: UnidentifiedImageError"), unit
    assert corrupt.name in unit["error"]
