"""The trial task's keys and plan-time checks."""

from __future__ import annotations

from pathlib import Path

import yaml

from model.experiment import check, eval_key, parse_evals, training_key

QUICKSTART = yaml.safe_load((Path(__file__).parents[2] / "studies" / "quickstart.yaml").read_text())["base"]


def test_training_key_ignores_eval_and_eval_key_follows_its_config():
    other_eval = {**QUICKSTART, "eval": {"analysis": {"dataset": "procedural"}}}
    assert training_key(other_eval) == training_key(QUICKSTART)
    assert training_key({**QUICKSTART, "seed": 1}) != training_key(QUICKSTART)
    key = training_key(QUICKSTART)
    knn = parse_evals(QUICKSTART)["knn"]
    knn_k10 = parse_evals({**QUICKSTART, "eval": {"knn": {"dataset": "procedural", "k": 10}}})["knn"]
    assert eval_key(key, knn) == eval_key(key, parse_evals(QUICKSTART)["knn"])
    assert eval_key(key, knn) != eval_key(key, knn_k10)
    assert eval_key(key, knn) != eval_key(training_key({**QUICKSTART, "seed": 1}), knn)


def test_check_accepts_the_quickstart_and_names_bad_keys(tmp_path):
    assert check(QUICKSTART) == []
    bad = {**QUICKSTART, "eval": {"linear_seg": {"dataset": "ade20k", "root": str(tmp_path / "nope")}}}
    (problem,) = check(bad)
    assert problem.startswith("eval.linear_seg: ade20k root") and "does not exist" in problem
    assert check({**QUICKSTART, "eval": {"knn2": {"dataset": "procedural"}}}) == [
        "eval.knn2: unknown evaluation; expected one of knn, linear_cls, linear_seg, linear_depth, analysis"
    ]
    assert any(p.startswith("model.scale") for p in check({**QUICKSTART, "model": {"scale": "huge"}}))
    assert check({**QUICKSTART, "runtime": {"threads": 0}}) == ["runtime.threads: got 0; expected >= 1"]


def test_eval_only_rerun_and_a_new_eval_do_not_retrain(tmp_path):
    import torch

    from model.experiment import LocalContext, run

    config = {
        "model": {"scale": "micro", "img_size": 32, "patch_size": 4, "depth": 2},
        "framework": {"name": "supervised", "recipe": "cpu"},
        "data": {"name": "procedural", "num_classes": 4, "size": 128},
        "train": {"steps": 3, "batch_size": 16, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2},
        "eval": {"knn": {"dataset": "procedural", "size": 64}},
        "seed": 0,
    }
    threads = torch.get_num_threads()
    try:
        first = run({**config, "runtime": {"threads": 1}}, LocalContext(tmp_path / "a", tmp_path / "cache"))
        assert torch.get_num_threads() == 1  # a cell sharing the cores with others keeps to its share
    finally:
        torch.set_num_threads(threads)
    assert first["pretrain.steps_run"] == 3  # runtime is not part of the training key: reused below
    assert {"knn.procedural.top1", "params.total", "params.extra_pct", "flops.fwd"} <= set(first)
    again = run(config, LocalContext(tmp_path / "b", tmp_path / "cache"))
    assert again["pretrain.steps_run"] == 0 and again["knn.procedural.top1"] == first["knn.procedural.top1"]
    more = {**config, "eval": {**config["eval"], "analysis": {"dataset": "procedural", "max_images": 8}}}
    extended = run(more, LocalContext(tmp_path / "c", tmp_path / "cache"))
    assert extended["pretrain.steps_run"] == 0 and "analysis.procedural.block1.attn_cls_entropy" in extended
    assert len(list((tmp_path / "cache" / "eval").glob("*.json"))) == 2
