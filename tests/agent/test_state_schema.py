"""The campaign's state schema: each fact stored once, and campaign directories written by an
older release migrated when they are opened (fixtures made with schema version 1)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matloop.agent.state import SCHEMA_VERSION, CampaignState
from matloop.cli import app
from matloop.data.slices import load_slice
from matloop.tools import collect_validation, query_dataset, queue_validation
from matloop.workspace import Workspace

FIXTURES = Path(__file__).parent / "fixtures" / "schema_v1"


def _schema(db_path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db_path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}


#: Columns that name a row of another table (or a row's own key): they link facts, hold none.
LINKS = {
    "key",
    "batch_id",
    "job_id",
    "item_id",
    "model_id",
    "selection_id",
    "slice_id",
    "duplicate_of",
    "scope",
}
#: The same word for different facts, with every table that uses it.
HOMONYMS = {
    "level": {"validation_batches", "validation_references"},  # a batch's level; a reference's
    "created": {"validation_batches", "labels", "artifacts"},  # when each row was made
    "meta": {"validation_batches", "artifacts"},  # what was derived from a batch; an artefact's
    "provenance": {"labels", "validation_references"},
    # why a job failed; why an item was refused; why a candidate was picked
    "reason": {"validation_jobs", "campaign_refused", "campaign_candidates"},
    "time": {"campaign_refused", "budget_ledger"},
    "round": {"campaign_candidates", "campaign_models"},  # when each was picked; trained
    "kind": {"campaign_models", "budget_ledger", "artifacts"},
    "value": {"campaign_meta", "labels"},
}


def test_no_table_holds_a_copy_of_another_tables_facts(workspace):
    CampaignState(workspace)  # the campaign's tables and the validation store's
    schema = _schema(workspace.db_path)
    assert "campaign_labels" not in schema and "campaign_calcs" not in schema
    holders: dict[str, set[str]] = {}
    for table, columns in schema.items():
        for column in set(columns) - LINKS:
            holders.setdefault(column, set()).add(table)
    assert {c: t for c, t in holders.items() if len(t) > 1} == HOMONYMS
    # a job's level and executor are its batch's; a label's item and level are its job's
    assert {"level", "executor"}.isdisjoint(schema["validation_jobs"])
    assert {"item_id", "level"}.isdisjoint(schema["labels"])


def _old_rows(db_path: Path, query: str) -> set[tuple]:
    with sqlite3.connect(db_path) as db:
        return set(db.execute(query).fetchall())


def _copy(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.mark.usefixtures("settings")
def test_a_finished_campaign_of_schema_1_reports_and_shows_its_status(tmp_path):
    directory = _copy(tmp_path, "finished")
    db_path = directory / "state.sqlite"
    labels = _old_rows(db_path, "SELECT item_id, property, level, value, unit, round FROM campaign_labels")
    calcs = _old_rows(db_path, "SELECT batch_id, item_id, round, level, status FROM campaign_calcs")
    assert len(labels) == 3 * 14 and len(calcs) == 14  # three properties of each item

    runner = CliRunner()
    out = runner.invoke(app, ["campaign", "status", str(directory)])
    assert out.exit_code == 0, out.output
    assert "14" in out.output
    out = runner.invoke(app, ["campaign", "report", str(directory)])
    assert out.exit_code == 0, out.output
    assert (directory / "report.html").stat().st_size > 10_000

    state = CampaignState(Workspace(directory))
    assert state.meta("schema_version") == SCHEMA_VERSION
    assert {"campaign_labels", "campaign_calcs"}.isdisjoint(_schema(db_path))
    keys = ("item_id", "property", "level", "value", "unit", "round")
    assert {tuple(lb[k] for k in keys) for lb in state.labels()} == labels
    keys = ("batch_id", "item_id", "round", "level", "status")
    assert {tuple(c[k] for k in keys) for c in state.calcs()} == calcs


@pytest.mark.usefixtures("settings")
def test_a_campaign_of_schema_1_stopped_mid_round_resumes(tmp_path):
    directory = _copy(tmp_path, "stopped")
    db_path = directory / "state.sqlite"
    labels = _old_rows(db_path, "SELECT item_id, property, level, value, unit, round FROM campaign_labels")
    uncollected = {
        b
        for (b,) in _old_rows(
            db_path, "SELECT batch_id FROM campaign_calcs EXCEPT SELECT batch_id FROM campaign_labels"
        )
    }
    assert len(uncollected) == 2  # the audit's and the planner's batch of round 1
    state = CampaignState(Workspace(directory))
    # queued before the stop, their labels stored at once (level lookup), but never collected
    assert uncollected.isdisjoint({lb["batch_id"] for lb in state.labels()})

    out = CliRunner().invoke(app, ["campaign", "resume", str(directory)])
    assert out.exit_code == 0, out.output
    assert state.meta("status") == "finished"
    after = state.labels()
    keys = ("item_id", "property", "level", "value", "unit", "round")
    assert labels < {tuple(lb[k] for k in keys) for lb in after}
    assert uncollected <= {lb["batch_id"] for lb in after}
    target = [lb["item_id"] for lb in after if lb["property"] == "formation_energy_per_atom"]
    assert len(target) == len(set(target)) == 14  # one label per item, as in a run never stopped


def test_labels_become_the_campaigns_by_collection_and_a_duplicate_counts_once(workspace):
    state = CampaignState(workspace)
    pool = query_dataset("mp_formation_energy", limit=3, workspace=workspace)
    ids = load_slice(workspace, pool.slice_id).ids
    batch = queue_validation(pool.slice_id, ids[:2], level="lookup", workspace=workspace)
    assert state.store.taken_ids(level="lookup") == set(ids[:2])  # stored at once (lookup)...
    assert state.labels() == []  # ... but nobody collected them yet
    collected = collect_validation(batch.batch_id, workspace=workspace)
    target = "formation_energy_per_atom"
    got = {lb["item_id"]: lb["value"] for lb in state.labels(target, "lookup")}
    assert got == {lb.item_id: lb.value for lb in collected.labels if lb.property == target}

    # the same structure again, served from the first job's labels: one label for the item
    store = state.store
    first = store.jobs(batch_id=batch.batch_id)[0]
    again = {"job_id": "calc-again", "item_id": first.item_id, "structure": first.structure}
    store.add_batch(
        "batch-again",
        "lookup",
        "local",
        pool.slice_id,
        [{**again, "status": "duplicate", "duplicate_of": first.job_id}],
    )
    served = collect_validation("batch-again", workspace=workspace)
    assert {lb.item_id for lb in served.labels} == {first.item_id}
    assert len(state.labels(target, "lookup")) == 2
