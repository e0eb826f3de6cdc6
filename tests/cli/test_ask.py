"""``matloop ask``: the plan before spending, ``--plan`` and requests too unclear to run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from matloop.agent.spec import CampaignSpec
from matloop.cli import app

#: a small pool (few elements, hence few elemental references) on which lead is on offer
LEAD_FREE = (
    "lead-free perovskites made only of Cs, K, Ca, Sr, Pb and I with the lowest formation energy, "
    "at most 4 CHGNet calculations"
)


def test_plan_prints_a_campaign_yaml_that_loads_and_creates_nothing(settings, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "ask",
            "--plan",
            "minimise the formation energy of Li-containing sulfides without Pb, 12 calcs, 300 K",
        ],
    )
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "campaign.yaml"
    path.write_text(result.stdout)
    spec = CampaignSpec.from_yaml(path)
    assert (spec.target.property, spec.target.goal) == ("formation_energy_per_atom", "minimize")
    assert spec.elements.forbidden == ["Pb"] and spec.elements.required == ["Li", "S"]
    assert spec.budget.calculations == 12 and spec.level == "chgnet"
    assert "note: temperature not used" in result.stderr
    assert not settings.workspace.exists()


def test_plan_of_an_unclear_request_asks_instead(settings):
    result = CliRunner().invoke(app, ["ask", "--plan", "formation energy, Cd"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "say 'containing Cd' or 'without Cd'" in result.stderr


def test_unattended_ask_with_an_unclear_request_fails_with_the_rephrasing(settings):
    result = CliRunner().invoke(app, ["ask", "formation energy of compounds containing Li or Na"])
    assert result.exit_code == 1
    assert "say 'containing Li and Na'" in result.stderr
    assert not settings.workspace.exists()


def test_in_a_terminal_the_plan_is_confirmed_and_an_unclear_request_rephrased(settings, monkeypatch):
    monkeypatch.setattr("matloop.cli.campaign._interactive", lambda: True)
    text = "queue 500 calculations of the formation energy with vasp, at most 5 calculations, Cd"
    result = CliRunner().invoke(
        app, ["ask", text], input="formation energy, no vasp, at most 5 calcs, no Cd\nn\n"
    )
    assert result.exit_code == 0, result.output
    assert "say 'containing Cd' or 'without Cd'" in result.output  # asked, then re-phrased
    plan = result.output.split("I read the request as:")[1].split("Run it?")[0]
    assert "calculations: 5" in plan and "forbidden:\n  - Cd" in plan and "level: chgnet" in plan
    assert "note: level vasp ruled out" in plan
    assert "Not run: not confirmed." in result.output and not settings.workspace.exists()


def test_a_lead_free_ask_campaign_never_queues_lead(settings):
    from matloop.agent.ask import ask
    from matloop.agent.campaign import Campaign
    from matloop.data.prototypes import build_prototype_pool
    from matloop.data.slices import load_slice

    offered = build_prototype_pool(families=("perovskite",), elements=["Cs", "K", "Ca", "Sr", "Pb", "I"])
    assert "perovskite-CsPbI3" in offered.ids
    result = ask(LEAD_FREE, planner="rules")
    root = Path(result.workspace)
    campaign = Campaign(root, CampaignSpec.from_yaml(root / "campaign.yaml"))
    queued = sorted({c["item_id"] for c in campaign.state.calcs()})
    assert queued and campaign.state.spent("calculations") <= 4
    pool_slice = load_slice(campaign.ws, campaign.state.step("setup:pool")["result"]["slice_id"])
    assert pool_slice.ids and all(i.startswith("perovskite-") for i in pool_slice.ids)
    assert "perovskite-CsPbI3" not in pool_slice.ids
    for structure in pool_slice.subset(queued).structures:
        assert "Pb" not in {e.symbol for e in structure.composition.elements}


def test_a_dataset_property_of_a_structure_family_plans_a_run_on_its_dataset(settings, tmp_path):
    result = CliRunner().invoke(app, ["ask", "--plan", "learn the band gap of perovskites"])
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "campaign.yaml"
    path.write_text(result.stdout)
    spec = CampaignSpec.from_yaml(path)
    assert (spec.target.property, spec.pool.source, spec.level) == ("band_gap", "mp_dielectric", "lookup")
    assert "mp_dielectric is not filtered by structure type" in result.stderr


def test_ask_json_is_one_document_naming_the_slice(settings):
    result = CliRunner().invoke(
        app, ["ask", "--json", "--yes", "find materials with a band gap between 1 and 2 eV, excluding oxygen"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["planner"] == "rules" and "mp_dielectric" in doc["answer"]
    assert any(i.startswith("slice-") for i in doc["ids"])


def test_ask_json_of_an_unclear_request_lists_the_questions(settings):
    result = CliRunner().invoke(app, ["ask", "--json", "formation energy, Cd"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["needs"]
