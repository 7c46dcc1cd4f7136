"""status.json, typed (sweeper.run.status): files workers already wrote read as they are, a rewrite
changes nothing, torn content reads as no status, and a value no worker writes is named.

The end-to-end writers (a real worker under each backend) are in test_launch*.py and test_ingest.py.
"""

from __future__ import annotations

import json
import os

import pytest

from sweeper.ingest import ingest
from sweeper.run.rundir import RunDir, write_json
from sweeper.run.status import Status, StatusError
from sweeper.run.worker import Worker
from sweeper.store import Cause, CellState, Store
from tests.sweeper.orchestration import submitted, write

# Files as the worker before sweeper.run.status wrote them (json.dumps of its dicts), one per way a cell
# ends: kind -> (the file, its state, its cause).
RUN = (
    '"token": "a1b2", "attempt": 2, "job_id": "4242_3", "host": "node7", "pid": 31337, '
    '"started": 1764750000.25, "restarts": 0'
)
END = '"ended": 1764750100.5'
WRITTEN_BEFORE = {
    "running": ('{"state": "RUNNING", ' + RUN + "}", CellState.RUNNING, None),
    "completed": ('{"state": "COMPLETED", ' + RUN + ", " + END + "}", CellState.COMPLETED, None),
    "failed": (
        '{"state": "FAILED", ' + RUN + ", " + END + ', "cause": "EXCEPTION", "error": "ValueError: bad lr", '
        '"traceback": "Traceback (most recent call last):\\n  ...\\nValueError: bad lr\\n"}',
        CellState.FAILED,
        Cause.EXCEPTION,
    ),
    "nan": (
        '{"state": "FAILED", ' + RUN + ", " + END + ', "cause": "NAN", "error": "NonFiniteMetric: it '
        'reported loss=nan at step 3", "traceback": "...", "result": {"acc": 0.5}}',
        CellState.FAILED,
        Cause.NAN,
    ),
    "requeued": (
        '{"state": "INTERRUPTED", ' + RUN + ', "cause": "REQUEUED", "checkpointed": true, ' + END + "}",
        CellState.INTERRUPTED,
        Cause.REQUEUED,
    ),
    "timeout": (
        '{"state": "INTERRUPTED", ' + RUN + ', "cause": "TIMEOUT", "checkpointed": false, ' + END + "}",
        CellState.INTERRUPTED,
        Cause.TIMEOUT,
    ),
    "gave up": (
        '{"state": "INTERRUPTED", ' + RUN + ', "cause": "TIMEOUT", "checkpointed": true, ' + END + ", "
        '"detail": "reached the time limit (timeout_min) too many times: submitit stopped requeueing it; '
        '`sweeper resume` continues it from its checkpoint"}',
        CellState.INTERRUPTED,
        Cause.TIMEOUT,
    ),
    "pruned": (
        '{"state": "PRUNED", ' + RUN + ", " + END + ', "reason": "pruned by the median pruner at step 3"}',
        CellState.PRUNED,
        None,
    ),
    "cancelled": (
        '{"state": "CANCELLED", ' + RUN + ', "cause": "CANCELLED", "checkpointed": true, ' + END + "}",
        CellState.CANCELLED,
        Cause.CANCELLED,
    ),
}


@pytest.mark.parametrize("kind", list(WRITTEN_BEFORE))
def test_a_status_file_written_before_reads_typed_and_rewrites_unchanged(tmp_path, kind):
    text, state, cause = WRITTEN_BEFORE[kind]
    path = tmp_path / "status.json"
    path.write_text(text)
    status = Status.read(path)
    assert (status.state, status.cause) == (state, cause)
    assert type(status.state) is CellState and (cause is None or type(status.cause) is Cause)
    assert (status.token, status.attempt, status.job_id, status.pid) == ("a1b2", 2, "4242_3", 31337)
    assert status.started == 1764750000.25 and isinstance(status.started, float)
    status.write(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(text)


@pytest.mark.parametrize("text", ["", '{"state": "RUNN', "[1, 2]", '"RUNNING"', "null"])
def test_torn_or_non_object_content_reads_as_no_status(tmp_path, text):
    path = tmp_path / "status.json"
    path.write_text(text)
    assert Status.read(path) == Status() == Status.read(tmp_path / "missing.json")


def test_keys_a_worker_does_not_write_are_ignored(tmp_path):
    write_json(tmp_path / "status.json", {"state": "COMPLETED", "token": "t", "gpu": "H100"})
    assert Status.read(tmp_path / "status.json") == Status(state=CellState.COMPLETED, token="t")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("state", "DONE", "expected one of PLANNED, SUBMITTING"),
        ("cause", "BAD_LUCK", "expected one of EXCEPTION, NAN"),
        ("pid", "31337", "expected an integer"),
        ("restarts", True, "expected an integer"),
        ("started", "yesterday", "expected seconds since the epoch"),
        ("checkpointed", "yes", "expected true or false"),
        ("job_id", 4242, "expected text"),
        ("result", [1.0], "expected an object of metric values"),
    ],
)
def test_a_value_no_worker_writes_is_named_with_its_file_and_key(tmp_path, key, value, expected):
    path = tmp_path / "status.json"
    write_json(path, {"state": "RUNNING", "token": "t"} | {key: value})
    with pytest.raises(StatusError) as e:
        Status.read(path)
    assert str(e.value).startswith(f"{path}: '{key}' is {value!r}; {expected}")


def test_read_not_strict_a_value_no_worker_writes_reads_as_no_status(tmp_path):
    write_json(tmp_path / "status.json", {"state": "RUNNING", "token": "t", "pid": "x"})
    assert Status.read(tmp_path / "status.json", strict=False) == Status()


def test_a_worker_runs_a_cell_whose_status_holds_no_status(tmp_path):
    """Its earlier word unreadable, a worker runs the cell as if it had none (one bad file stops no job)."""
    run = RunDir.of(tmp_path, "k")
    write_json(run.config, {"x": 1, "seed": 0})
    write_json(run.attempt, {"token": "t1", "number": 1})
    write_json(run.status, {"state": "RUNNING", "token": "t1", "pid": "not a pid"})
    assert Worker("tests.sweeper.tasks:echo", str(tmp_path), ["k"], "t1", capture=False)() == {
        "k": "COMPLETED"
    }
    status = Status.read(run.status)
    assert (status.state, status.token, status.restarts, status.pid) == (
        CellState.COMPLETED,
        "t1",
        0,
        os.getpid(),
    )


def test_ingest_fails_only_the_cell_whose_status_holds_no_status_and_says_why(env):
    study = write(env / "typed.yaml", "echo", {"x": 1}, "+variant: [a, b]")
    runs = {c.labels["variant"]: (c, RunDir.of(study.workdir, c.key)) for c in study.cells}
    with Store() as store:
        store.plan(study)
        for cell, run in runs.values():
            submitted(store, cell, run, CellState.RUNNING, "4194321")  # no such process
            write_json(run.status, {"state": "COMPLETED", "token": "t1", "pid": 4194321})
            write_json(run.result, {"score": 1.0})
        write_json(runs["b"][1].status, {"state": "RUNNING", "token": "t1", "pid": "4194321"})
        runs["b"][1].result.unlink()
        got = {s.labels["variant"]: s for s in ingest(store, study)}
    assert (got["a"].state, got["a"].cause) == (CellState.COMPLETED, None)
    assert (got["b"].state, got["b"].cause) == (CellState.FAILED, Cause.EXCEPTION)
    assert f"{runs['b'][1].status}: 'pid' is '4194321'; expected an integer" in (got["b"].detail or "")
