"""The dry run before spending: the pool, its screening calculations, the reference phases of the
hull and what the budget leaves for labels — from ``campaign plan`` and before a run's first
calculation."""

from __future__ import annotations

import tempfile

import pytest
import yaml
from typer.testing import CliRunner

from matloop.agent.campaign import Campaign, plan_spec, run_campaign
from matloop.agent.plan import plan_campaign
from matloop.agent.spec import CampaignSpec
from matloop.audit_stats import audit_size
from matloop.cli import app
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.tools import collect_validation, query_dataset, queue_validation

ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Si", "O", "S", "F", "Cl"]


def stable_spec(calculations: int) -> CampaignSpec:
    return CampaignSpec.model_validate(
        {
            "name": "plan-stable",
            "planner": "rules",
            "pool": {"source": "mp_formation_energy", "query": {"elements": ELEMENTS, "n_elements": 3}},
            "target": {
                "property": "formation_energy_per_atom",
                "goal": "stable",
                "references": {"source": "mp_formation_energy", "max_elements": 2},
            },
            "level": "lookup",
            "model": {"backbone": "magpie", "ensemble_size": 2, "cheap_level": "none"},
            "budget": {"calculations": calculations, "cpu_hours": 10, "llm_tokens": 0},
        }
    )


def test_plan_counts_the_pool_and_the_reference_phases_and_writes_nothing(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    plan = plan_spec(stable_spec(100), settings=settings)
    pool = query_dataset("mp_formation_energy", elements=ELEMENTS, n_elements=3, workspace=settings.workspace)
    refs = query_dataset(
        "mp_formation_energy", elements=ELEMENTS, min_elements=2, max_elements=2, workspace=settings.workspace
    )
    assert (plan.pool, plan.references.count, plan.screening) == (pool.count, refs.count, None)
    assert plan.references.cost == refs.count  # one calculation each at lookup, as queued
    assert plan.audit == audit_size(100, pool.count, fraction=0.15, min_items=8)
    assert plan.left_for_labels == 100 - refs.count and plan.fits
    assert plan.elements == []  # lookup gives formation energies: no elemental references
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary workspace is gone


def test_a_budget_the_references_would_eat_is_refused_before_any_calculation(settings, tmp_path):
    budget = int(plan_spec(stable_spec(100), settings=settings).references.cost) + 10
    plan = plan_spec(stable_spec(budget), settings=settings)  # the audit set shrinks with the budget
    assert not plan.fits
    with pytest.raises(ToolInputError) as err:
        run_campaign(stable_spec(budget), tmp_path / "c", settings=settings)
    message = str(err.value)
    expected = plan.references.cost + plan.needed
    assert "\n" not in message and message.startswith(f"budget.calculations: expected at least {expected:g}")
    assert f"{plan.references.count} reference phases at lookup" in message
    assert f"got {budget}, which leaves 10 for labels" in message
    campaign = Campaign(tmp_path / "c", stable_spec(budget), settings=settings)
    assert campaign.state.spent("calculations") == 0 and campaign.state.calcs() == []
    assert campaign.state.meta("status") == "failed" and "budget.calculations" in campaign.state.meta(
        "reason"
    )


def test_screening_a_pool_larger_than_the_budget_allows_is_refused_by_plan_and_run(settings, tmp_path):
    """Issue of scale: a screening level over 1,500 crystals costs 1.5 calculations, which a budget of
    4 cannot pay with an audit, a seed set and a batch; both commands say so with the numbers."""
    spec = {
        "name": "screen-too-much",
        "planner": "rules",
        "pool": {"source": "mp_formation_energy", "max_items": 1500},
        "level": "chgnet",
        "model": {"backbone": "magpie", "cheap_level": "chgnet_static"},
        "seed_size": 2,
        "batch_size": 2,
        "budget": {"calculations": 4, "cpu_hours": 1, "llm_tokens": 0},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["campaign", "plan", str(path)])
    assert result.exit_code == 1
    assert "screening: 1500 single points at chgnet_static (0 cached): 1.5 calculations" in result.stdout
    assert "got 4, which leaves 2.5 for labels" in " ".join(result.stdout.split())
    result = CliRunner().invoke(app, ["campaign", "run", str(path), "--dir", str(tmp_path / "c")])
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "error: budget.calculations: expected at least 7.5 for a pool of 1500" in text
    assert not (tmp_path / "c" / "calcs").exists()


def test_cached_screening_single_points_are_counted_and_charged_alike(settings, tmp_path):
    spec = CampaignSpec.model_validate(
        {
            "pool": {"source": "prototypes", "families": ["rocksalt"], "max_items": 10},
            "level": "chgnet",
            "model": {"backbone": "magpie", "cheap_level": "chgnet_static"},
            "budget": {"calculations": 40, "cpu_hours": 1, "llm_tokens": 0},
        }
    )
    campaign = Campaign(tmp_path / "c", spec, settings=settings)
    before = plan_campaign(campaign)
    assert (before.pool, before.screening.count, before.screening.cached) == (10, 10, 0)
    assert before.screening.cost == pytest.approx(0.01)
    pool = campaign.state.step("setup:pool")["result"]["slice_id"]
    ids = load_slice(campaign.ws, pool).ids[:3]
    batch = queue_validation(pool, ids, level="chgnet_static", workspace=campaign.ws)
    collect_validation(batch.batch_id, timeout_s=300, workspace=campaign.ws)
    after = plan_campaign(campaign)
    assert (after.screening.cached, after.screening.cost) == (3, before.screening.cost)
