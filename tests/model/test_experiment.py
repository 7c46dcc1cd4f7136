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
        "eval.knn2: unknown evaluation; expected one of knn, linear_cls, linear_seg, linear_depth, analysis"]
    assert any(p.startswith("model.scale") for p in check({**QUICKSTART, "model": {"scale": "huge"}}))
