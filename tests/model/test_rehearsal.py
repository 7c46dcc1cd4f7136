"""model.rehearsal: units per training config, fixtures in each dataset's real layout, and a real
rehearsal (steps, checkpoint save and restore, every evaluation) of a micro config on them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.data import build_dataset, check_root
from model.data.fixtures import SIZES, WRITERS, write_fixture
from model.rehearsal import plan, run

ROOT = Path(__file__).resolve().parents[2]
MICRO = {"scale": "micro", "img_size": 32, "patch_size": 8, "registers": 0, "specialize": {}}
TRAIN = {"steps": 500, "batch_size": 64, "lr": 1e-3, "warmup_steps": 50}


def _config(seed: int = 0, specialize: dict | None = None, framework: str = "supervised", **evals) -> dict:
    return {
        "seed": seed,
        "model": {**MICRO, "specialize": specialize or {}},
        "framework": {"name": framework, "recipe": "cpu"},
        "data": {"name": "imagefolder", "root": "/nonexistent/imagenet"},
        "train": dict(TRAIN),
        "eval": evals or {"knn": {"dataset": "imagefolder"}},
    }


def test_plan_rehearses_each_training_config_once_and_each_evaluation_once_per_model():
    configs = [
        _config(0),
        _config(1),
        _config(0, framework="dino"),
        _config(0, knn={"dataset": "imagefolder", "k": 5}),
        _config(0, micro := {"norm1": "all"}),
        _config(1, {"qkv": 2}),
        _config(0, micro, framework="dino"),
        _config(2, micro, linear_cls={"dataset": "imagefolder"}),
    ]
    units = plan(configs)
    assert [u["cells"] for u in units] == [[0, 1, 3], [2], [4, 5, 7], [6]]  # seeds and evaluations aside
    assert [u.get("variants") for u in units] == [None, None, [micro, {"qkv": 2}], [micro]]
    assert [u["evals"] for u in units] == [
        [
            ["knn", {"dataset": "imagefolder"}],
            ["knn", {"dataset": "imagefolder", "k": 5}],
            ["linear_cls", {"dataset": "imagefolder"}],
        ],  # a variant's evaluation, on the full unit's model
        [],  # the same model as the first unit's: its evaluations ran there
        [],
        [],
    ]
    assert "eval" not in units[0]["config"] and units[0]["config"]["seed"] == 0


def test_a_variants_unit_builds_runs_and_reloads_each_spec_and_fails_at_the_spec_it_cannot_build(tmp_path):
    (_, unit) = plan(
        [
            _config(0),
            _config(0, {"qkv": 2, "ls1": "all", "final_norm": True}),
            _config(0, {"registers": "patch", "norm1": 1}),
        ]
    )
    unit["config"]["model"]["registers"] = 2  # registers routed with the patches need registers
    stages: list[str] = []
    figures = run(unit, steps=2, workdir=tmp_path, shared=tmp_path, stage=stages.append)
    assert [s.split(" ")[0] for s in stages] == ["build", "backward", "checkpoint"] * 2 + ["done"]
    assert figures["params"] > 0
    unit["variants"].append({"qkv": 5})  # micro has 4 blocks
    with pytest.raises(ValueError, match="first 5 blocks out of range for depth 4"):
        run(unit, steps=2, workdir=tmp_path, shared=tmp_path, stage=stages.append)
    assert stages[-1] == 'build {"qkv": 5}'


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_fixtures_are_read_by_the_real_loaders(tmp_path, name):
    root = write_fixture(name, tmp_path / name, images=2)
    check_root(name, root)
    for split in ("train", "val"):
        dataset = build_dataset(name, split, root=root)
        assert len(dataset) == (4 if name == "imagefolder" else 2)
        sample = dataset[0]
        assert sample["image"].shape == (3, *SIZES[name])
        target = {"imagefolder": "label", "ade20k": "mask", "nyu": "depth", "cityscapes": "mask"}[name]
        assert target in sample
    mtime = (root / ".fixture").stat().st_mtime_ns
    assert write_fixture(name, root).stat().st_mtime_ns and (root / ".fixture").stat().st_mtime_ns == mtime


def test_run_trains_restores_and_evaluates_on_fixtures_of_every_format(tmp_path):
    evals = {
        "knn": {"dataset": "imagefolder"},
        "linear_seg": {"dataset": "ade20k", "root": "/nonexistent/ADEChallengeData2016", "img_size": 64},
        "linear_depth": {"dataset": "nyu", "root": "/nonexistent/nyu"},
    }
    other = {"linear_seg": {"dataset": "cityscapes", "root": "/nonexistent/cityscapes", "val_size": 48}}
    (unit,) = plan([_config(**evals), _config(**other)])
    stages: list[str] = []
    figures = run(unit, steps=3, workdir=tmp_path / "work", shared=tmp_path / "shared", stage=stages.append)
    assert stages == [
        "data",
        "train",
        "resume",
        "eval knn",
        "eval linear_seg",
        "eval linear_depth",
        "eval linear_seg",
        "done",
    ]
    assert figures["seconds_per_step"] > 0 and figures["params"] > 0
    written = sorted(p.name.split("-")[0] for p in (tmp_path / "shared").iterdir())
    assert written == ["ade20k", "cityscapes", "imagefolder", "nyu"]
    (ckpt,) = (tmp_path / "work" / "pretrain").glob("*/last.pt")
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == state["total_steps"] == 3 and state["train"]["batch_size"] == 2
    results = sorted(json.loads(p.read_text())["eval"] for p in (tmp_path / "work" / "eval").glob("*.json"))
    assert results == ["knn", "linear_depth", "linear_seg", "linear_seg"]


def test_a_config_the_trainer_rejects_fails_at_the_train_stage(tmp_path):
    config = _config()
    config["train"]["warmup_epochz"] = 10  # as norm_vs_qkv.yaml once set a key TrainConfig lacked
    stages: list[str] = []
    with pytest.raises((TypeError, ValueError), match="warmup_epochz"):
        run(plan([config])[0], steps=2, workdir=tmp_path / "w", shared=tmp_path / "s", stage=stages.append)
    assert stages[-1] == "train"


# Every shipped study, as CI rehearses it. norm_vs_qkv's 30 training configs cover each (scale,
# framework) pair and each variant in 6 units. The other paper-scale studies vary what norm_vs_qkv
# trains: each rehearses every label of each axis (its variants of one training config in a variants
# unit), and the (scale, framework) pairs it leaves out train exactly as a config norm_vs_qkv's
# rehearsal runs in full, specialization aside (SHARED). The CPU-scale studies are rehearsed whole.
COVER = {
    # one process per config: its ViT-L DINOv2 config as 2 DDP ranks peaks at 21.6 GB, too near this
    # 24 GB machine; the library studies below rehearse their ViT-S/B configs as 2 ranks
    "norm_vs_qkv.yaml": ["--cover", "model.scale,framework.name", "--max-processes", "1"],
    "depth.yaml": ["--only", "model.scale=small"],  # B and L as norm_vs_qkv's DINOv2 cells
    "components.yaml": ["--only", "framework.name=deit3"],
    "frameworks.yaml": ["--only", "framework.name=dino", "--only", "framework.name=ibot"],
    "registers.yaml": ["--only", "model.scale=base", "--only", "framework.name=deit3"],
}
SHARED = "norm_vs_qkv.yaml"


def _selected(study: str) -> tuple[list, list]:
    """(all cells of the study, the cells `sweeper rehearse` selects with its COVER arguments)."""
    from sweeper.launch import parse_only
    from sweeper.run.rehearse import select
    from sweeper.study import load_study

    loaded, args = load_study(ROOT / "studies" / study), COVER[study]
    only = [v for k, v in zip(args, args[1:], strict=False) if k == "--only"]
    cover = [v for k, v in zip(args, args[1:], strict=False) if k == "--cover"] or None
    return loaded.cells, select(loaded, parse_only(loaded, only), cover)


def _pair(cell) -> tuple[str, str]:
    return cell.config["model"]["scale"], cell.config["framework"]["name"]


def _training(cell) -> str:
    """The cell's training config less its specialization (what a variants unit shares)."""
    config = {k: v for k, v in cell.config.items() if k not in ("seed", "eval")}
    return json.dumps(
        {**config, "model": {k: v for k, v in config["model"].items() if k != "specialize"}}, sort_keys=True
    )


def test_every_pair_a_study_leaves_out_of_its_rehearsal_trains_as_one_the_shared_study_rehearses():
    shared = {_training(c) for c in _selected(SHARED)[1]}
    for study in COVER:
        cells, chosen = _selected(study)
        left = {_pair(c) for c in cells} - {_pair(c) for c in chosen}
        assert all(any(_pair(c) == pair and _training(c) in shared for c in cells) for pair in left), study


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(p.name for p in (ROOT / "studies").glob("*.yaml")))
def test_every_shipped_study_passes_its_rehearsal(tmp_path, study):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sweeper.cli import app; app()",
            "rehearse",
            str(ROOT / "studies" / study),
            "--json",
            *COVER.get(study, []),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=1800,
    )
    assert proc.stdout, proc.stderr[-3000:]
    units = json.loads(proc.stdout)["units"]
    failed = [(u["labels"], u["stage"], u["error"]) for u in units if not u["ok"]]
    assert not failed and proc.returncode == 0, failed
    assert not (tmp_path / "results.db").exists()
    if study == SHARED:
        pairs = {
            (s, f)
            for u in units
            for s in u["labels"]["model.scale"].split("|")
            for f in u["labels"]["framework.name"].split("|")
        }
        assert pairs == {(s, f) for s in ("small", "base", "large") for f in ("dinov2", "deit3")}
        assert len({v for u in units for v in u["labels"]["model.specialize"].split("|")}) == 5
    if study in COVER and "--max-processes" not in COVER[study]:  # multi-GPU jobs: their DDP path, 2 ranks
        assert any(u["processes"] == 2 for u in units), units
    if study in COVER:  # the selected configs, and in them every variant (pairs: the test above)
        cells, chosen = _selected(study)
        assert sum(u["cells"] for u in units) == len(chosen)
        rehearsed = {(a, v) for u in units for a, labels in u["labels"].items() for v in labels.split("|")}
        pair_axes = ("seed", "model.scale", "framework.name")
        assert rehearsed >= {(a, str(v)) for c in cells for a, v in c.labels.items() if a not in pair_axes}
