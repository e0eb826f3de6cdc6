"""``matloop campaign status`` names the campaign's picks (id, formula, μ ± σ, label) and prints
one JSON document with ``--json``; ``campaign log --json`` prints one record per line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matloop.cli import app
from matloop.data.slices import load_slice
from matloop.workspace import Workspace

FINISHED = Path(__file__).parents[1] / "agent" / "fixtures" / "schema_v1" / "finished"


@pytest.fixture
def finished(settings, tmp_path) -> Path:
    return Path(shutil.copytree(FINISHED, tmp_path / "finished"))


def test_status_json_names_the_best_picks(finished):
    result = CliRunner().invoke(app, ["campaign", "status", str(finished), "--json", "--top", "4"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["status"] == "finished" and doc["labels"] == 14 and doc["unit"] == "eV/atom"
    assert doc["budget_left"]["calculations"] == pytest.approx(6)
    picks = doc["picks"]
    assert len(picks) == 4 and len({p["id"] for p in picks}) == 4
    labels = [p["label"] for p in picks]
    assert labels == sorted(labels)  # a minimisation: the lowest labels first
    ws = Workspace(finished)
    slices = {a.id: load_slice(ws, a.id) for a in ws.artifacts("slice")}
    for p in picks:
        data = next(d for d in slices.values() if p["id"] in d.ids)
        assert p["formula"] == data.subset([p["id"]]).formulas()[0]
    assert all(p["mean"] is not None or p["round"] == 0 for p in picks)


def test_status_table_lists_the_picks_by_formula(finished):
    result = CliRunner().invoke(app, ["campaign", "status", str(finished)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    doc = json.loads(CliRunner().invoke(app, ["campaign", "status", str(finished), "--json"]).output)
    best = doc["picks"][0]
    line = next(line for line in result.output.splitlines() if f" {best['id']} " in line)
    assert best["formula"] in line and f"{best['label']:.4g}" in line


def test_log_json_is_one_record_per_line(finished):
    result = CliRunner().invoke(app, ["campaign", "log", str(finished), "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    records = [json.loads(line) for line in lines]
    stored = (finished / "decisions.jsonl").read_text().splitlines()
    assert len(records) == len(stored) == 50
    assert records[0] == json.loads(stored[0])
