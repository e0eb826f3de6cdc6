"""Campaigns end to end with the real tools: the quickstart (shortened), crash and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from matloop.agent.campaign import Campaign, CampaignSpec, run_campaign
from matloop.cli import app
from matloop.models.saved import load_model
from matloop.validation.levels import SCREENING_CHARGE

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.yaml"


PRETRAIN = {
    "source": "mp_formation_energy",
    "property": "formation_energy_per_atom",
    "limit": 80,
    "epochs": 3,
}


def _short_quickstart(tmp_path: Path, **override) -> Path:
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec.update(
        pool={"source": "prototypes", "families": ["rocksalt", "zincblende"], "max_items": 20},
        model={"method": "ensemble", "epochs": 4},
        seed_size=4,
        batch_size=3,
        rounds=1,
        audit={"fraction": 0.05, "min_items": 4},
    )
    spec.update(override)
    path = tmp_path / "quickstart.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _assert_consistent(campaign: Campaign) -> None:
    """No label lost, no calculation twice, budget counted once per calculation."""
    spec = campaign.spec
    labelled = {lb["item_id"] for lb in campaign.state.labels(spec.target.property, spec.level)}
    ok = [c for c in campaign.state.calcs() if c["status"] not in ("rejected", "failed")]
    assert {c["item_id"] for c in ok if c["level"] == spec.level} <= labelled
    ran = Counter((c["item_id"], c["level"]) for c in campaign.state.calcs() if c["status"] != "duplicate")
    assert all(n == 1 for n in ran.values()), ran
    assert campaign.state.spent("calculations") <= spec.budget.calculations


def test_quickstart_runs_end_to_end_from_the_cli(settings, tmp_path):
    spec_path = _short_quickstart(tmp_path, pretrained=PRETRAIN)  # the transfer path: pretrain, fine-tune
    out = tmp_path / "qs"
    runner = CliRunner()
    result = runner.invoke(app, ["campaign", "run", str(spec_path), "--dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "finished" in result.output
    campaign = Campaign(out, CampaignSpec.from_yaml(out / "campaign.yaml"))
    labels = campaign.state.labels("formation_energy_per_atom", "chgnet")
    assert len(labels) == 4 + 3 + 4  # seed set, one round, the random audit set
    assert len(campaign.own_labels()) == 4 + 3 and campaign.audit.summary().labelled == 4
    kinds = [m["kind"] for m in campaign.state.models()]
    assert kinds[0] == "train_uq_gnn" and "fine_tune" in kinds  # pretrained, then fine-tuned
    html = (out / "report.html").read_text()
    assert "Learning curve on the audit set" in html and "Calibration on the audit set" in html
    assert "Found vs expected under random selection" in html and "error random picks would have had" in html
    assert html.count("data:image/png;base64") >= 3 and "fine-tuned" in html and "mp_formation_energy" in html
    _assert_consistent(campaign)
    for cmd in (["status", str(out)], ["log", str(out)], ["report", str(out)]):
        res = runner.invoke(app, ["campaign", *cmd])
        assert res.exit_code == 0, res.output
    assert "select_candidates" in runner.invoke(app, ["campaign", "log", str(out)]).output
    assert "audit MAE" in runner.invoke(app, ["campaign", "status", str(out)]).output


@pytest.mark.slow
def test_kill_9_mid_campaign_then_resume_loses_nothing_and_computes_nothing_twice(settings, tmp_path):
    spec_path = _short_quickstart(tmp_path, pretrained=None, rounds=2)
    out = tmp_path / "crash"
    code = (
        "import sys; from matloop.agent.campaign import run_campaign; "
        f"run_campaign({str(spec_path)!r}, {str(out)!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = out / "decisions.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text() if log.exists() else ""
            if '"round": 1' in text and '"tool": "collect_validation"' in text.split('"round": 1', 1)[1]:
                break  # round-1 calculations are running: crash now
            time.sleep(0.2)
        assert proc.poll() is None, "the campaign finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = Campaign(out, CampaignSpec.from_yaml(out / "campaign.yaml"))
    assert before.state.meta("status") == "running"
    n_before = len(before.state.labels())

    campaign = run_campaign(None, out, resume=True)  # type: ignore[arg-type]
    assert campaign.state.meta("status") == "finished"
    assert len(campaign.state.labels()) >= n_before
    assert len(campaign.own_labels()) == 4 + 3 + 3
    assert campaign.audit.ids() == before.audit.ids() and campaign.audit.summary().labelled == 4
    _assert_consistent(campaign)
    # the screening level ran once for each of the 20 pool items, was charged and fed every model
    assert sum(c["level"] == "chgnet_static" for c in campaign.state.calcs()) == 20
    assert campaign.state.spent("calculations") % 1 == pytest.approx(20 * SCREENING_CHARGE)
    models = [load_model(campaign.ws, m["model_id"]) for m in campaign.state.models()]
    assert {m.meta["cheap_level"] for m in models} == {"chgnet_static"}
    notes = [r["rationale"] for r in campaign.log.records() if r["phase"] == "note"]
    assert any(n.startswith("resumed") for n in notes)


def test_model_section_reaches_the_workspace_training_settings(settings, tmp_path):
    spec = CampaignSpec.model_validate(
        {"model": {"conv": "schnet", "bootstrap": True, "patience": 4, "ensemble_size": 2, "hidden": 24}}
    )
    train = Campaign(tmp_path / "c", spec).ws.settings.train
    assert (train.conv, train.bootstrap, train.patience, train.ensemble_size, train.hidden) == (
        "schnet",
        True,
        4,
        2,
        24,
    )
    assert Campaign(tmp_path / "d", CampaignSpec()).ws.settings.train == settings.train
