"""Commands that only read (the source list, a campaign's status, log and report, help and usage
errors) start without importing torch, torch-geometric or LangChain: each runs in a fresh
interpreter that then lists which of those it loaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FINISHED = Path(__file__).parents[1] / "agent" / "fixtures" / "schema_v1" / "finished"
HEAVY = ("torch", "torch_geometric", "chgnet", "langchain_core", "jobflow", "pymatgen.analysis.phase_diagram")

PROBE = """
import json, sys
from typer.testing import CliRunner
from matloop.cli import app
result = CliRunner().invoke(app, json.loads(sys.argv[1]))
print(json.dumps({"exit_code": result.exit_code, "output": result.output,
                  "loaded": [m for m in json.loads(sys.argv[2]) if m in sys.modules]}))
"""


def _run(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def finished(tmp_path) -> Path:
    """A finished campaign (its predictions cached in the state, as every finished run leaves them)."""
    return Path(shutil.copytree(FINISHED, tmp_path / "finished"))


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["--help"], 0),
        (["data", "--help"], 0),
        (["data", "list"], 0),
        (["data", "query"], 2),  # usage error: the source is missing
        (["campaign", "status", "."], 1),  # not a campaign directory
    ],
)
def test_reading_commands_and_usage_errors_do_not_import_torch(settings, args, exit_code):
    out = _run(args)
    assert out["exit_code"] == exit_code, out["output"]
    assert out["loaded"] == []


@pytest.mark.parametrize("command", ["status", "log", "report"])
def test_a_finished_campaign_is_read_without_torch(settings, finished, command):
    out = _run(["campaign", command, str(finished)])
    assert out["exit_code"] == 0, out["output"]
    assert out["loaded"] == []
    if command == "status":
        assert "finished" in out["output"] and "14 formation_energy_per_atom@lookup" in out["output"]
