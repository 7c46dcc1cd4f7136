"""`sweeper rehearse`: the study's hook plans units, each runs in its own process; the table names the
stage a unit reached and its error, peak memory is each unit's own, nothing is recorded."""

from __future__ import annotations

import json
import os
import re
import time

from typer.testing import CliRunner

from sweeper.cli import app

STUDY = """
study: rh
task: tests.sweeper.tasks:echo
rehearse: tests.sweeper.tasks:rehearsal
base: {x: 1, y: a, z: p}
axes:
  x: [1, 2, 3]
  y: [a, b]
  z: [p, q]
seeds: 2
"""


def _rehearse(*args: str):
    return CliRunner().invoke(app, ["rehearse", *args], catch_exceptions=False)


def test_each_unit_reports_its_stage_error_and_own_peak_memory_and_nothing_is_recorded(env, write_study):
    path = write_study(STUDY)
    result = _rehearse(str(path), "--steps", "3")
    assert result.exit_code == 1, result.output
    assert "ValueError: x=2 is bad" in result.output and "killed by SIGKILL (out of memory?)" in result.output
    assert "1 passed, 2 failed; nothing was recorded" in result.output
    assert not (env / "results.db").exists() and not (env / "runs").exists()

    units = json.loads(_rehearse(str(path), "--json").stdout)["units"]
    # seeds collapse (one config per seed pair); the hook groups the 4 (y, z) configs of each x into one unit
    got = [(u["labels"]["x"], u["labels"]["y"], u["cells"]) for u in units]
    assert got == [("1", "a|b", 4), ("2", "a|b", 4), ("3", "a|b", 4)]
    ok, bad, killed = units
    assert ok["ok"] and ok["stage"] == "train" and ok["figures"] == {"seconds_per_step": 0.5}
    assert not bad["ok"] and bad["stage"] == "train" and bad["error"] == "ValueError: x=2 is bad"
    assert not killed["ok"] and killed["stage"] == "train"
    assert killed["peak_rss_mb"] > 300 > ok["peak_rss_mb"]  # that child's, not the largest so far
    assert [u["processes"] for u in units] == [1, 1, 1]  # local executor: one process per job


RANKS = STUDY.replace("x: [1, 2, 3]", "x: [1, 2, 3, 4]").replace(
    "seeds: 2\n",
    """seeds: 1
executor: slurm
resources: {default: {nodes: 2, gpus_per_node: 2, tasks_per_node: 2}}
""",
)


def test_a_job_of_several_processes_is_rehearsed_by_ranks_and_a_failing_rank_is_named(
    env, write_study, monkeypatch
):
    monkeypatch.setattr("sweeper.run.rehearse.JOIN_MIN_S", 2.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    started = time.monotonic()
    result = _rehearse(str(write_study(RANKS)), "--json")
    assert time.monotonic() - started < 120  # ranks left waiting for 600 s were killed
    assert result.exit_code == 1
    ok, bad, killed, hung = units = json.loads(result.stdout)["units"]
    assert [u["processes"] for u in units] == [2, 2, 2, 2]  # the hook's choice for jobs of 2 x 2 processes
    port = ok["figures"].pop("port")
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert ok["ok"] and ok["figures"] == {"rank": 0, "world": 2, "job": 4, "held_mb": 150, "threads": threads}
    assert port > 0 and ok["peak_rss_mb"] > 300  # the sum of both ranks' peaks
    assert not bad["ok"] and bad["stage"] == "train" and bad["error"] == "rank 1: ValueError: x=2 is bad"
    assert killed["error"].startswith("rank 1: killed by SIGKILL (out of memory?)")
    assert killed["peak_rss_mb"] > 300  # rank 1's, which died; rank 0 was killed by the rehearsal
    assert re.fullmatch(r"rank 1: did not end within \d+ s of rank 0 \(hung\?\)", hung["error"]), hung

    table = _rehearse(str(write_study(RANKS)), "--only", "x=1").output
    assert re.search(r"┃ configs ┃ procs ┃.*\n.*\n│ 1 │ a\|b │ p\|q │ +4 │ +2 │", table), table
    capped = _rehearse(str(write_study(RANKS)), "--only", "x=1", "--max-processes", "1", "--json")
    (unit,) = json.loads(capped.stdout)["units"]  # where memory is short: one process, told a world of 1
    assert unit["ok"] and unit["processes"] == 1, unit


def test_only_and_cover_narrow_what_is_rehearsed(env, write_study):
    path = write_study(STUDY)
    only = json.loads(_rehearse(str(path), "--only", "x=1", "--json").stdout)["units"]
    assert [(u["labels"], u["ok"]) for u in only] == [({"x": "1", "y": "a|b", "z": "p|q"}, True)]

    result = _rehearse(str(path), "--only", "x=1", "--cover", "y", "--json")
    assert result.exit_code == 0
    (unit,) = json.loads(result.stdout)["units"]
    assert unit["cells"] == 2 and set(unit["labels"]["y"].split("|")) == {"a", "b"}  # and z: both
    assert set(unit["labels"]["z"].split("|")) == {"p", "q"}

    result = _rehearse(str(path), "--cover", "x,y", "--json")  # every (x, y) pair, every z
    units = json.loads(result.stdout)["units"]
    assert sum(u["cells"] for u in units) == 6
    assert all(set(u["labels"]["y"].split("|")) == {"a", "b"} for u in units)


def test_a_study_without_a_usable_hook_is_a_user_error(env, write_study):
    result = _rehearse(str(write_study(STUDY.replace("rehearse: tests.sweeper.tasks:rehearsal\n", ""))))
    assert result.exit_code == 2 and "the study names no rehearsal hook" in result.output
    result = _rehearse(str(write_study(STUDY.replace("tasks:rehearsal", "tasks:nothing"))))
    assert result.exit_code == 2 and "rehearse: tests.sweeper.tasks:nothing could not plan" in result.output
    assert "AttributeError" in result.output
    result = _rehearse(str(write_study(STUDY.replace("tasks:rehearsal", "tasks.rehearsal"))))
    assert result.exit_code == 2 and "rehearse: expected a 'module.path:object' string" in result.output
    result = _rehearse(str(write_study(STUDY)), "--cover", "x,yy")
    assert result.exit_code == 2 and "--cover yy: unknown axis (did you mean 'y'?)" in result.output
