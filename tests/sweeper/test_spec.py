"""Study files: expansion semantics, key stability and every class of bad input."""

from __future__ import annotations

import pytest

from sweeper.errors import SpecError
from sweeper.study import cell_key, load_study, parse_study

HEAD = """
study: s
task: model.experiment:run
base:
  model: {scale: tiny, depth: 4, specialize: {}}
  train: {lr: 0.001, steps: 10}
"""


def study(body: str = "", head: str = HEAD):
    return parse_study(head + body, "s.yaml")


def labels(s) -> list[tuple]:
    return [tuple(c.labels.values()) for c in s.cells]


def problems(body: str, head: str = HEAD) -> str:
    with pytest.raises(SpecError) as e:
        study(body, head)
    return str(e.value)


# ----------------------------------------------------------------------------- expansion


def test_product_of_axes_and_seeds_in_declaration_order():
    s = study("axes:\n  model.scale: [tiny, small]\n  train.lr: [0.1, 0.01, 0.001]\nseeds: 2\n")
    assert len(s.cells) == 12
    assert labels(s)[:3] == [("tiny", 0.1, 0), ("tiny", 0.1, 1), ("tiny", 0.01, 0)]
    cell = s.cells[-1]
    assert cell.config["model"]["scale"] == "small" and cell.config["train"]["lr"] == 0.001
    assert cell.config["seed"] == 1 and cell.seed == 1
    assert cell.config["model"]["depth"] == 4  # untouched base values stay


def test_named_variants_merge_their_sub_config_at_the_axis_path():
    s = study(
        """
axes:
  model.specialize:
    baseline: {}
    norms: {norm1: all, norm2: all}
    qkv_third: {qkv: first_third}
"""
    )
    by_variant = {c.labels["model.specialize"]: c.config["model"]["specialize"] for c in s.cells}
    assert by_variant == {
        "baseline": {},
        "norms": {"norm1": "all", "norm2": "all"},
        "qkv_third": {"qkv": "first_third"},
    }
    assert s.axes[0].named


def test_named_variants_deep_merge_into_a_non_empty_mapping():
    s = study("axes:\n  train:\n    short: {steps: 5}\n    long: {steps: 50, lr: 0.01}\n")
    trains = [c.config["train"] for c in s.cells]
    assert trains == [{"lr": 0.001, "steps": 5}, {"lr": 0.01, "steps": 50}]


def test_zip_varies_axes_together():
    s = study(
        "axes:\n  zip:\n    - model.scale: [tiny, small, base]\n      train.lr: [0.1, 0.01, 0.001]\n  "
        "train.steps: [1, 2]\n"
    )
    assert len(s.cells) == 6
    pairs = {(c.config["model"]["scale"], c.config["train"]["lr"]) for c in s.cells}
    assert pairs == {("tiny", 0.1), ("small", 0.01), ("base", 0.001)}


def test_seeds_as_a_count_or_a_list():
    assert study("seeds: 3\n").seeds == [0, 1, 2]
    assert [c.seed for c in study("seeds: [7, 11]\n").cells] == [7, 11]
    assert [c.seed for c in study().cells] == [0]


def test_exclude_drops_matching_combinations_and_accepts_lists():
    s = study(
        """
axes:
  model.scale: [tiny, small, base]
  train.lr: [0.1, 0.01]
exclude:
  - {model.scale: base, train.lr: 0.1}
  - {model.scale: [small], train.lr: [0.1, 0.01]}
"""
    )
    assert labels(s) == [("tiny", 0.1, 0), ("tiny", 0.01, 0), ("base", 0.01, 0)]


def test_include_keeps_only_matching_combinations():
    s = study(
        "axes:\n  model.scale: [tiny, small]\n  train.lr: [0.1, 0.01]\ninclude:\n  - {model.scale: tiny}\n "
        " - {train.lr: 0.01}\n"
    )
    assert labels(s) == [("tiny", 0.1, 0), ("tiny", 0.01, 0), ("small", 0.01, 0)]


def test_a_rule_that_matches_nothing_is_a_warning():
    s = study(
        """
axes:
  model.scale: [tiny, small, base]
  train.lr: [0.1, 0.01]
include:
  - {model.scale: [tiny, small]}
exclude:
  - {model.scale: tiny}
  - {model.scale: tiny, train.lr: 0.1}
  - {model.scale: base}
"""
    )
    assert labels(s) == [("small", 0.1, 0), ("small", 0.01, 0)]
    assert s.warnings == [
        "s.yaml: exclude[1]: excludes nothing that earlier rules do not",
        "s.yaml: exclude[2]: matches no cell",
    ]


def test_resources_default_plus_overrides_by_axis_value():
    s = study(
        """
axes:
  model.scale: [tiny, large]
resources:
  default: {timeout_min: 60, gpus_per_node: 1}
  overrides:
    - when: {model.scale: large}
      set: {nodes: 2, timeout_min: 600}
"""
    )
    assert [c.resources for c in s.cells] == [
        {"timeout_min": 60, "gpus_per_node": 1},
        {"timeout_min": 600, "gpus_per_node": 1, "nodes": 2},
    ]


def test_baseline_as_variant_name_or_mapping():
    body = "axes:\n  model.specialize:\n    baseline: {}\n    norms: {norm1: all}\n"
    assert study(body + "baseline: baseline\n").baseline == {"model.specialize": "baseline"}
    assert study(body + "baseline: {model.specialize: norms}\n").baseline == {"model.specialize": "norms"}


def test_dotted_keys_in_base_and_declared_new_paths():
    s = study(
        "axes:\n  +train.momentum: [0.9, 0.99]\n",
        head="study: s\ntask: m:run\nbase:\n  train.lr: 1e-3\n  train.steps: 3\n",
    )
    assert s.cells[0].config == {"train": {"lr": 0.001, "steps": 3, "momentum": 0.9}, "seed": 0}
    assert s.axes[0].name == "train.momentum"


# ----------------------------------------------------------------------------- keys


def test_key_ignores_key_order_float_spelling_resources_and_executor():
    a = study(
        "resources: {default: {timeout_min: 5}}\nexecutor: {kind: slurm}\n",
        head="study: a\ntask: m:run\nbase:\n  train: {lr: 1e-3, steps: 10}\n  model: {scale: tiny}\n",
    )
    b = study(
        "resources: {default: {timeout_min: 500}}\nexecutor: {kind: local, parallelism: 2}\n",
        head="study: b\ntask: m:run\nbase:\n  model: {scale: tiny}\n  train: {steps: 10, lr: 0.001}\n",
    )
    assert a.cells[0].key == b.cells[0].key


def test_key_changes_with_config_seed_and_task():
    s = study("axes:\n  train.lr: [0.1, 0.2]\nseeds: 2\n")
    assert len({c.key for c in s.cells}) == 4
    assert cell_key("a:run", {"x": 1}) != cell_key("b:run", {"x": 1})


def test_key_is_stable_across_releases():
    # A changed hash would orphan every result already in users' stores.
    assert cell_key("model.experiment:run", {"model": {"scale": "tiny"}, "seed": 0}) == "c728d5c355cec699"


@pytest.mark.parametrize("kind", ["debug", "local", "slurm"])
def test_a_bare_executor_kind_means_that_kind_with_its_defaults(kind):
    assert study(f"executor: {kind}\n").executor == study(f"executor: {{kind: {kind}}}\n").executor


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ("exectuor: {kind: local}\n", "exectuor", "did you mean 'executor'"),
        ("executor: {kind: local, paralelism: 2}\n", "executor.paralelism", "did you mean 'parallelism'"),
        ("executor: {kind: slrum}\n", "executor", "'debug', 'local', 'slurm'"),
        (
            "executor: slrum\n",
            "executor",
            "expected one of 'debug', 'local', 'slurm' (a kind, or a mapping with kind: and its settings), "
            "got 'slrum' (did you mean 'slurm'?)",
        ),
        ("executor: 3\n", "executor", "got 3"),
        (
            "resources: {default: {timeout_mn: 5}}\n",
            "resources.default.timeout_mn",
            "did you mean 'timeout_min'",
        ),
        (
            "resources: {default: {timeout_min: 0}}\n",
            "resources.default.timeout_min",
            "greater than 0, got 0",
        ),
        ("seeds: zero\n", "seeds", "expected a count >= 1 or a non-empty list of integers, got 'zero'"),
        ("seeds: 0\n", "seeds", "expected a count >= 1"),
        ("seeds: [1, 1]\n", "seeds", "duplicate seeds"),
        ("baseline: [1]\n", "baseline", "expected a variant name or a mapping"),
        ("axes:\n  model.scale: []\n", "axes.model.scale", "empty axis"),
        ("axes:\n  model.scale: {}\n", "axes.model.scale", "empty axis"),
        ("axes:\n  model.scale: tiny\n", "axes.model.scale", "list of values or a mapping"),
        ("axes:\n  model.scal: [tiny]\n", "axes.model.scal", "did you mean 'model.scale'"),
        ("axes:\n  model.scale.x: [1]\n", "axes.model.scale.x", "'model.scale' is a str"),
        ("axes:\n  train:\n    a: {lrr: 1}\n", "axes.train.a.lrr", "did you mean 'train.lr'"),
        ("axes:\n  model.scale: [tiny, tiny]\n", "axes.model.scale", "duplicate values"),
        ("axes:\n  seed: [1, 2]\n", "axes.seed", "reserved"),
        (
            "axes:\n  zip:\n    - {model.scale: [a, b], train.lr: [1]}\n",
            "axes.zip[0]",
            "same number of values",
        ),
        (
            "axes:\n  model.scale: [tiny, small]\nexclude:\n  - {model.scael: tiny}\n",
            "exclude[0].model.scael",
            "did you mean 'model.scale'",
        ),
        (
            "axes:\n  model.scale: [tiny, small]\nexclude:\n  - {model.scale: tiyn}\n",
            "exclude[0].model.scale",
            "expected one of: tiny, small",
        ),
        ("axes:\n  model.scale: [tiny]\nbaseline: tiny\n", "baseline", "exactly one named-variants axis"),
        ("axes:\n  model.scale: [tiny]\nexclude:\n  - {model.scale: tiny}\n", "", "no cells"),
        ("axes:\n  model.specialize:\n    a: {}\n    b: {}\n", "axes", "resolve to the same config"),
    ],
)
def test_bad_input_names_the_key_path_and_what_was_expected(body, path, expected):
    message = problems(body)
    assert message.startswith(f"s.yaml: {path}: " if path else "s.yaml: "), message
    assert expected in message, message


def test_an_unknown_key_hides_no_other_problem_of_its_mapping_or_the_file():
    """Pydantic stops checking a mapping at its unknown key; the file is checked again without it."""
    message = problems(
        "seedz: 2\n"
        "executor: {kind: slurm, cells_per_jobb: 2, array_parallelism: 0}\n"
        "resources: {default: {timeout_min: -1, cpus_per_tsk: 2}}\n"
    )
    lines = message.splitlines()
    for path, expected in [
        ("seedz", "did you mean 'seeds'"),
        ("executor.cells_per_jobb", "did you mean 'cells_per_job'"),
        ("executor.array_parallelism", "greater than 0, got 0"),
        ("resources.default.cpus_per_tsk", "did you mean 'cpus_per_task'"),
        ("resources.default.timeout_min", "greater than 0, got -1"),
    ]:
        assert sum(line.startswith(f"s.yaml: {path}: ") and expected in line for line in lines) == 1, message
    assert len(lines) == 5, message


def test_malformed_task_and_name():
    message = problems("", head="study: 'my study'\ntask: model.experiment.run\n")
    assert "s.yaml: task: expected a 'module.path:function' string" in message
    assert "s.yaml: study: expected a name" in message


def test_duplicate_variant_names_are_rejected_with_their_line():
    message = problems("axes:\n  model.specialize:\n    norms: {}\n    norms: {norm1: all}\n")
    assert "duplicate key 'norms'" in message and "line 10" in message


def test_yaml_syntax_errors_name_the_line():
    message = problems("", head="study: s\ntask: [unclosed\n")
    assert "while parsing a flow sequence at line 2, column 7" in message


def test_top_level_must_be_a_mapping():
    assert "expected a mapping" in problems("", head="- a\n- b\n")


def test_missing_required_keys():
    message = problems("", head="study: s\n")
    assert "s.yaml: task: field required" in message


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_study(tmp_path / "absent.yaml")


def test_shipped_studies_are_valid():
    quick = load_study("studies/quickstart.yaml")
    paper = load_study("studies/norm_vs_qkv.yaml")
    assert quick.executor.kind == "local" and len(quick.cells) == 6 and not quick.warnings
    assert len(paper.cells) == 5 * 3 * 2 * 3 and paper.baseline == {"model.specialize": "baseline"}
    large = [c for c in paper.cells if c.labels["model.scale"] == "large"]
    assert all(c.resources["nodes"] == 2 for c in large)
    counts = {
        name: len(load_study(f"studies/{name}.yaml").cells)
        for name in ("depth", "components", "frameworks", "registers")
    }
    assert counts == {
        "depth": 7 * 3 * 3,
        "components": 16 * 2 * 3,
        "frameworks": 3 * 4 * 3,
        "registers": 5 * 2 * 2 * 3,
    }
    tuned = load_study("studies/tuned_quickstart.yaml")
    assert tuned.cells == [] and len(tuned.search.groups) == 2 and tuned.search.budget == 8
    assert tuned.search.final_seeds == [1, 2] and tuned.search.parallel == 2


def test_the_readme_example_is_a_valid_study():
    readme = open("README.md").read()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    s = parse_study(example, "README.md")
    assert len(s.cells) == 3 * 3 * 2 * 2 * 3 - 2 * 2 * 3  # minus the excluded large × norms
    assert s.executor.kind == "slurm"


def test_a_signal_delay_at_or_past_the_time_limit_is_refused_naming_both_keys():
    slurm = "executor: {kind: slurm, signal_delay_s: 120}\naxes:\n  model.scale: [tiny, small]\n"
    rule = (
        "resources:\n  default: {timeout_min: 5}\n"
        "  overrides:\n    - {when: {model.scale: small}, set: {timeout_min: 2}}\n"
    )
    message = problems(slurm + rule)
    assert "executor.signal_delay_s" in message and "resources.overrides[0].set.timeout_min" in message
    assert "120 s is not less than the job's time limit of 120 s" in message
    assert "resources.default" not in message  # 5 min is fine
    # A limit just past the delay, or the same delay on a local lane (no SLURM signal), is accepted.
    assert study(slurm + rule.replace("timeout_min: 2", "timeout_min: 2.1"))
    assert study(rule + "executor: {kind: local}\naxes:\n  model.scale: [tiny, small]\n")
