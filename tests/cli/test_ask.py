"""``matloop ask``: the plan before spending, ``--plan`` and requests too unclear to run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from matloop.agent.spec import CampaignSpec
from matloop.cli import app

LEAD_FREE = "lead-free perovskites with the lowest formation energy, no Tl, at most 4 CHGNet calculations"


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


@pytest.mark.slow
def test_a_lead_free_ask_campaign_never_queues_lead(settings):
    from matloop.agent.campaign import Campaign
    from matloop.data.prototypes import build_prototype_pool
    from matloop.data.slices import load_slice

    pool = build_prototype_pool(families=("perovskite",))
    assert any(
        "Pb" in {e.symbol for e in s.composition.elements} for s in pool.structures
    )  # lead was on offer
    result = CliRunner().invoke(app, ["ask", "--yes", "--planner", "rules", LEAD_FREE])
    assert result.exit_code == 0, result.output
    campaign = Campaign(result.output.split("workspace ")[1].split(";")[0], CampaignSpec(name="ask"))
    queued = [c["item_id"] for c in campaign.state.calcs()]
    assert queued and campaign.state.spent("calculations") <= 4
    pool_slice = load_slice(campaign.ws, campaign.state.step("setup:pool")["result"]["slice_id"])
    for structure in pool_slice.subset(queued).structures:
        assert not {"Pb", "Tl"} & {e.symbol for e in structure.composition.elements}
