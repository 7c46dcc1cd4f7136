"""Strict configs at plan time: every shipped study passes its check, and each class of mistake,
made in a copy of each shipped study, is refused by `sweeper plan` before anything is recorded,
with one line per problem naming the study file, a cell and the key path."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from sweeper.run.precheck import precheck
from sweeper.study import load_study

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
ALL_STUDIES = sorted((ROOT / "studies").rglob("*.yaml"))  # with studies/cpu/


def _image(path: Path, array: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array if array is not None else np.zeros((16, 16, 3), np.uint8)).save(path)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """ImageNet and ADE20K roots in their on-disk layouts, one image per split."""
    root = tmp_path_factory.mktemp("datasets")
    for split in ("train", "val"):
        _image(root / "imagenet" / split / "n01440764" / f"{split}_1.JPEG")
    ade = root / "ADEChallengeData2016"
    for split, prefix in (("training", "train"), ("validation", "val")):
        _image(ade / "images" / split / f"ADE_{prefix}_00000001.jpg")
        _image(ade / "annotations" / split / f"ADE_{prefix}_00000001.png", np.ones((16, 16), np.uint8))
    return {"/datasets/imagenet": root / "imagenet", "/datasets/ADEChallengeData2016": ade}


def _copy(study: Path, tmp_path: Path, datasets: dict[str, Path], edit=None) -> Path:
    """A copy of ``study`` with the dataset roots of this machine and ``edit`` applied."""
    text = study.read_text()
    for cluster, here in datasets.items():
        text = text.replace(cluster, str(here))
    raw = yaml.safe_load(text)
    if edit is not None:
        edit(raw)
    path = tmp_path / study.name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _set(raw: dict, path: str, value) -> None:
    """Set ``path`` in the base; an axis of that name gets the value as one more."""
    section, _, key = path.partition(".")
    raw["base"].setdefault(section, {})
    target = raw["base"][section]
    *parents, last = key.split(".")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[last] = value
    axis = raw.get("axes", {}).get(path)
    if isinstance(axis, list):
        axis.append(value)
    elif isinstance(axis, dict):
        axis["mistake"] = value


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("SWEEPER_DB", raising=False)
    return tmp_path


@pytest.mark.parametrize("study", ALL_STUDIES, ids=lambda p: str(p.relative_to(ROOT / "studies")))
def test_every_shipped_study_passes_its_check(study, cwd, datasets):
    loaded = load_study(_copy(study, cwd, datasets))
    cells = list(loaded.search.templates.values()) if loaded.search else loaded.cells
    precheck(loaded, cells)  # raises UserError listing the problems


MISTAKES = {
    "unknown key": (lambda raw: _set(raw, "train.lrr", 1e-3), "train.lrr: unknown key; did you mean 'lr'?"),
    "wrong type": (lambda raw: _set(raw, "train.lr", "abc"), "train.lr: got 'abc'; expected a valid number"),
    "out of range": (lambda raw: _set(raw, "train.batch_size", 0), "train.batch_size: got 0; expected >= 1"),
    "unknown scale": (
        lambda raw: _set(raw, "model.scale", "huge"),
        "model.scale: got 'huge'; expected 'micro'",
    ),
    "unknown framework": (
        lambda raw: _set(raw, "framework.name", "byol"),
        "framework.name: unknown framework 'byol'; expected one of deit3, dino",
    ),
    "unknown framework key": (
        lambda raw: _set(raw, "framework.layerscal", None),
        "framework.layerscal: unknown key; did you mean 'layerscale'?",
    ),
    "unknown recipe": (
        lambda raw: _set(raw, "framework.recipe", "dinov3"),
        "framework.recipe: unknown recipe 'dinov3'; expected one of cpu, cpu_ssl, dinov2",
    ),
    "unknown data key": (
        lambda raw: _set(raw, "data.nmae", "x"),
        "data.nmae: unknown key; did you mean 'name'?",
    ),
    "relative data root": (
        lambda raw: raw["base"].update(data={"name": "imagefolder", "root": "imagenet"}),
        "data.root: 'imagenet' is relative, but the task runs in its run directory; give an absolute path",
    ),
    "unknown eval key": (
        lambda raw: _set(raw, "eval.knn.kk", 20),
        "eval.knn.kk: unknown key; did you mean 'k'?",
    ),
    "unknown section": (
        lambda raw: raw["base"].update(trian={"lr": 1}),
        "trian: unknown section; did you mean 'train'?",
    ),
    "runtime": (
        lambda raw: _set(raw, "runtime.threads", "two"),
        "runtime.threads: got 'two'; expected a valid integer",
    ),
    "unimportable task": (
        lambda raw: raw.update(task="model.experimentt:run"),
        "task: cannot import 'model.experimentt:run': ModuleNotFoundError",
    ),
}


# The paper-scale library shares norm_vs_qkv's base: a mistake there is the same mistake in each of
# its studies, so the plans below (~1 min a study) run on the studies with a base of their own.
LIBRARY = ("depth", "components", "frameworks", "registers")
OWN_BASE = [p for p in STUDIES if p.stem not in LIBRARY]


def test_the_library_studies_share_norm_vs_qkvs_base():
    bases = {p.stem: yaml.safe_load(p.read_text())["base"] for p in STUDIES}
    assert all(bases[name] == bases["norm_vs_qkv"] for name in LIBRARY)


def _plan(path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from sweeper.cli import app; app()", "plan", str(path)]
    return subprocess.run(
        command, cwd=path.parent, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"}
    )


@pytest.mark.slow  # ~13 plans of a process that imports torch each, two at a time; ~35 s a study
@pytest.mark.parametrize("study", OWN_BASE, ids=lambda p: p.stem)
def test_each_mistake_is_refused_at_plan_with_one_line_naming_file_cell_and_key(study, cwd, datasets):
    paths = {}
    for i, (name, (edit, _)) in enumerate(MISTAKES.items()):
        (cwd / str(i)).mkdir()
        paths[name] = _copy(study, cwd / str(i), datasets, edit)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each waits on its check child's torch import
        results = dict(zip(paths, pool.map(_plan, paths.values()), strict=True))
    for name, (_, expected) in MISTAKES.items():
        path, output = paths[name], results[name].stdout + results[name].stderr
        message = " ".join(output.split())
        assert results[name].returncode == 2, (name, output)
        assert expected in message, (name, output)
        if name != "unimportable task":
            lines = [line for line in output.splitlines() if expected[:20] in line]
            assert len(lines) == 1 and f"{path}: " in lines[0] and "cell {" in lines[0], (name, output)
        assert "Traceback" not in output
    assert not list(cwd.rglob("results.db"))  # nothing recorded


@pytest.mark.parametrize(
    "specialize, registers, expected",
    [
        ({"ls1": "all"}, 0, "specialize.ls1: block 0 has no ls1"),
        ({"qkv": [12]}, 0, "specialize.qkv: block index 12 out of range for depth 4"),
        ({"norm1": "all", "registers": "patch"}, 0, "routed to 'patch' but the model has no register tokens"),
    ],
)
def test_a_spec_the_model_cannot_take_is_refused_by_check(specialize, registers, expected):
    """Built on the meta device at check time: what only the model knows is refused before submission."""
    from model.experiment import check

    config = {
        "model": {
            "scale": "micro",
            "img_size": 32,
            "patch_size": 8,
            "registers": registers,
            "specialize": specialize,
        },
        "framework": {"name": "supervised", "recipe": "cpu", "layerscale": None},
        "data": {"name": "procedural"},
        "train": {"steps": 10},
    }
    problems = check(config)
    assert (
        len(problems) == 1 and problems[0].startswith("model: cannot be built: ") and expected in problems[0]
    )
    config["model"].update(specialize={"norm1": "all"})
    assert check(config) == []
