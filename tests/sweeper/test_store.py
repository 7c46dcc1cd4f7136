"""The results store on SQLite and PostgreSQL: round trips, plan diffs, schema version."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from sweeper.errors import UserError
from sweeper.store import SCHEMA_VERSION, CellState, Meta, Store
from sweeper.study import load_study

STUDY = """
study: {name}
task: model.experiment:run
base:
  model: {{scale: tiny, specialize: {{}}}}
  train: {{lr: 0.001}}
axes:
  model.specialize:
    baseline: {{}}
    norms: {{norm1: all}}
{extra}
seeds: 2
"""


def make(write_study, name="s", extra="", file="study.yaml"):
    return load_study(write_study(STUDY.format(name=name, extra=extra), file))


def test_plan_records_study_cells_and_memberships(store_url, write_study):
    study = make(write_study)
    with Store(store_url) as store:
        plan = store.plan(study)
        assert len(plan.added) == 4 and not plan.kept and not plan.orphaned
        assert plan.counts()["new"] == 4
        cells = store.cells("s")
        assert [c.key for c in cells] == [c.key for c in study.cells]
        assert cells[1].labels == {"model.specialize": "baseline", "seed": 1}
        assert cells[3].config == study.cells[3].config  # JSON round trip
        (summary,) = store.studies()
        assert (summary.name, summary.cells, summary.states) == ("s", 4, {"PLANNED": 4})


def test_replanning_an_unchanged_study_adds_nothing(store_url, write_study):
    study = make(write_study)
    with Store(store_url) as store:
        store.plan(study)
        again = store.plan(study)
    assert not again.added and len(again.kept) == 4 and not again.orphaned


def test_plan_diff_after_the_study_file_is_edited(store_url, write_study):
    with Store(store_url) as store:
        store.plan(make(write_study))
        edited = make(write_study, extra="  train.lr: [0.001, 0.01]\n")
        plan = store.plan(edited)
        # lr 0.001 reproduces the old configs: kept; lr 0.01 is new.
        assert len(plan.kept) == 4 and len(plan.added) == 4 and not plan.orphaned
        shrunk = load_study(
            write_study(STUDY.format(name="s", extra="").replace("    norms: {norm1: all}\n", ""))
        )
        plan = store.plan(shrunk)
        assert len(plan.kept) == 2 and len(plan.orphaned) == 6
        cells = store.cells("s")
        assert sum(c.orphaned for c in cells) == 6  # reported, not deleted
        assert len(store.cells("s", include_orphaned=False)) == 2
        # Putting a variant back revives its cells.
        plan = store.plan(make(write_study))
        assert len(plan.kept) == 4 and not plan.added and len(plan.orphaned) == 4


def test_a_cell_shared_by_two_studies_is_stored_once_with_each_studys_labels(store_url, write_study):
    a = make(write_study, name="a", file="a.yaml")
    with Store(store_url) as store:
        store.plan(a)
        # Other variant names over the same configs: the same cells, under study b's labels.
        other = STUDY.format(name="b", extra="").replace("baseline:", "plain:").replace("norms:", "n1:")
        plan = store.plan(load_study(write_study(other, "b.yaml")))
        assert len(plan.added) == 4  # new to study b …
        with store.session() as s:
            assert s.execute(text("select count(*) from cells")).scalar() == 4  # … but not to the store
        assert [c.key for c in store.cells("a")] == [c.key for c in store.cells("b")]
        assert store.cells("b")[0].labels == {"model.specialize": "plain", "seed": 0}
        assert store.cells("a")[0].labels == {"model.specialize": "baseline", "seed": 0}


def test_states_follow_attempts_and_plan_categories(store_url, write_study):
    study = make(write_study)
    keys = [c.key for c in study.cells]
    with Store(store_url) as store:
        store.plan(study)
        store.add_attempt(keys[0], executor="local", job_id="1", state=CellState.RUNNING, host="node1")
        done = store.add_attempt(keys[1], executor="local", job_id="2", state=CellState.RUNNING)
        store.update_attempt(done, state=CellState.COMPLETED)
        failed = store.add_attempt(keys[2], executor="slurm", job_id="3_0")
        store.update_attempt(failed, state=CellState.FAILED, cause="OUT_OF_MEMORY", detail="oom at step 12")
        again = store.add_attempt(keys[2], executor="slurm", job_id="4_0")
        plan = store.plan(study)
        counts = plan.counts()
        assert (counts["new"], counts["running"], counts["done"], counts["failed"]) == (1, 2, 1, 0)
        attempts = store.attempts(keys[2])
        assert [(a.number, a.state, a.cause) for a in attempts] == [
            (1, "FAILED", "OUT_OF_MEMORY"),
            (2, "SUBMITTING", None),
        ]
        assert attempts[1].id == again
        assert plan.per_axis["model.specialize"]["baseline"] == {"running": 1, "done": 1}


def test_metrics_round_trip(store_url, write_study):
    study = make(write_study)
    key = study.cells[0].key
    with Store(store_url) as store:
        store.plan(study)
        store.add_metrics(key, "pretrain", {"loss": 2.5}, step=10)
        store.add_metrics(key, "eval", {"linear_seg.ade20k.miou": 41.25, "knn.imagenet.top1": 70.5})
        assert store.metrics(key) == {"linear_seg.ade20k.miou": 41.25, "knn.imagenet.top1": 70.5}
        assert store.metrics(key, final_only=False)["loss"] == 2.5


def test_schema_is_versioned_and_a_newer_store_is_refused(store_url):
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        with store.session() as s, s.begin():
            s.get(Meta, "schema_version").value = str(SCHEMA_VERSION + 1)
    with pytest.raises(UserError, match="newer sweeper"):
        Store(store_url)


def test_the_final_values_index_is_partial_on_each_backend(store_url):
    """The report's covering index holds final values only (PostgreSQL's condition is set when its
    store opens, so that SQLite commands never import that dialect)."""
    with Store(store_url) as store, store.engine.connect() as c:
        if store.engine.dialect.name == "sqlite":
            q = "SELECT sql FROM sqlite_master WHERE name = 'ix_metrics_final'"
        else:
            q = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_metrics_final'"
        assert "step IS NULL" in c.execute(text(q)).scalar_one()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'r.db'}") as store, store.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_unusable_urls_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a usable database URL"):
        Store("nosuchdb://x")
    with pytest.raises(UserError, match="cannot open the results store"):
        Store(f"sqlite:///{tmp_path / 'missing-dir' / 'r.db'}")


def test_unknown_study_suggests_a_close_name(store_url, write_study):
    with Store(store_url) as store:
        store.plan(make(write_study, name="quickstart"))
        with pytest.raises(UserError, match="did you mean 'quickstart'"):
            store.cells("quikstart")


def test_a_v2_store_migrates_to_metrics_stored_once_per_attempt_and_step(store_url, write_study):
    """In v2 a value could be stored twice (two controllers, a resume); the migration keeps the
    last recorded (what reports showed), gives rows their cell's last attempt, and adds the unique index."""
    study = make(write_study)
    key, other = study.cells[0].key, study.cells[1].key
    with Store(store_url) as store:
        store.plan(study)
        for _ in range(2):
            store.add_attempt(key, executor="local", state=CellState.COMPLETED)
        with store.session() as s, s.begin():  # back to the v2 schema
            s.execute(text("DROP INDEX ux_metrics_once"))
            s.execute(text("ALTER TABLE metrics DROP COLUMN attempt"))
            s.execute(text("ALTER TABLE studies DROP COLUMN workdir"))
            s.get(Meta, "schema_version").value = "2"
            rows = [(key, None, 1.0), (key, None, 2.0), (key, 5, 0.5), (key, 5, 0.4), (other, None, 3.0)]
            for cell, step, value in rows:
                s.execute(
                    text(
                        "INSERT INTO metrics (cell_key, stage, name, step, value) "
                        "VALUES (:c, 'final', 'acc', :s, :v)"
                    ),
                    {"c": cell, "s": step, "v": value},
                )
    with Store(store_url) as store:
        assert store.schema_version == SCHEMA_VERSION == 4
        with store.session() as s:
            got = s.execute(text("SELECT cell_key, attempt, step, value FROM metrics")).all()
        assert set(map(tuple, got)) == {(key, 2, 5, 0.4), (key, 2, None, 2.0), (other, 0, None, 3.0)}
        store.add_metrics(key, "final", {"acc": 9.0}, attempt=2)  # stored again: replaced, not added
        assert store.metrics(key) == {"acc": 9.0}
        with store.session() as s:
            count = text("SELECT COUNT(*) FROM metrics WHERE cell_key = :k")
            assert s.execute(count, {"k": key}).scalar() == 2


def test_replacing_a_cells_metrics_stores_each_attempt_metric_and_step_once(store_url, write_study):
    study = make(write_study)
    key = study.cells[0].key
    row = {"cell_key": key, "attempt": 1, "stage": "report", "name": "loss", "step": 3, "value": 0.5}
    final = row | {"stage": "final", "step": None, "value": 0.9}
    with Store(store_url) as store:
        store.plan(study)
        store.add_metric_rows([row | {"value": 7.0}, row | {"step": 4}])  # replaced below
        store.replace_metrics([key], [row, row, final, final])
        with store.session() as s:
            got = s.execute(text("SELECT step, value FROM metrics")).all()
        assert sorted(map(tuple, got), key=str) == [(3, 0.5), (None, 0.9)]
