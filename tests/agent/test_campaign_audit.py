"""The audit set in real campaigns at level ``lookup`` on the bundled Materials Project formation
energies: its estimates against the truth known from the whole pool, its reservation whatever
the planner does, and its budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from matloop.agent.campaign import Campaign, CampaignSpec, run_campaign
from matloop.audit_stats import audit_size, draw_audit, error_metrics, in_window, proportion_interval
from matloop.cli import app
from matloop.data.feature_sets import load_graphs
from matloop.data.slices import load_slice
from matloop.models.saved import load_model
from matloop.validation.level_values import model_items

WINDOW = (None, -2.0)  # ~10 % of the bundled formation energies


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _one_cache(settings, shared_cache, monkeypatch) -> None:
    """This module's campaigns share one cache: the pool's graphs, CHGNet vectors and the
    CHGNet-relaxed elemental references are computed once, not once per test."""
    monkeypatch.setenv("MATLOOP_CACHE_DIR", str(shared_cache))


def _spec(seed: int, **override: Any) -> CampaignSpec:
    spec: dict[str, Any] = {
        "name": f"audit-{seed}",
        "planner": "rules",
        "pool": {"source": "mp_formation_energy", "max_items": 200},
        "target": {"property": "formation_energy_per_atom", "goal": "window", "window": list(WINDOW)},
        "level": "lookup",
        # no screening level: these campaigns test the audit, and every calculation is a whole label
        "model": {"epochs": 8, "ensemble_size": 2, "hidden": 16, "cheap_level": "none"},
        "seed_size": 8,
        "batch_size": 8,
        "rounds": 2,
        "budget": {"calculations": 60, "cpu_hours": 10, "llm_tokens": 0},
        "audit": {"fraction": 0.4, "min_items": 8},
        "seed": seed,
    }
    spec.update(override)
    return CampaignSpec.model_validate(spec)


def _truth(campaign: Campaign) -> tuple[float, float, dict[str, Any]]:
    """True pool hit rate and true MAE of the final model on every eligible pool item it was not
    trained with, from the labels the lookup level holds for the whole pool."""
    plan = campaign.audit.plan
    assert plan is not None
    pool = load_slice(campaign.ws, plan["pool_slice"])
    eligible = campaign.audit.eligible(plan["pool_slice"])
    y = dict(zip(pool.ids, pool.target("formation_energy_per_atom"), strict=True))
    rate = float(np.mean([in_window(y[i], WINDOW) for i in eligible]))
    final = max(campaign.state.models(), key=lambda m: m["round"])
    model = load_model(campaign.ws, final["model_id"])
    trained = {i for part in model.meta["split_ids"].values() for i in part}
    rest = [i for i in eligible if i not in trained]
    graphs = load_graphs(plan["pool_feature_set"], workspace=campaign.ws)
    pos = {item_id: k for k, item_id in enumerate(graphs.ids)}
    pred = model.predict_items(model_items(graphs, campaign.ws, model.meta).take([pos[i] for i in rest]))
    mae = float(np.mean(np.abs(pred.mean - np.array([y[i] for i in rest]))))
    return rate, mae, {"model": model, "rest": rest, "pred": pred, "y": y, "eligible": eligible}


def test_audit_intervals_hold_the_truth_in_seeded_campaigns(settings, tmp_path):
    """Ten seeded campaigns: the true hit rate and the final model's true MAE on the rest of the
    pool lie inside the audit's 95 % intervals in at least 8 of them; the audit items never trained
    a model, the draw is the campaign seed's, and the budget holds."""
    rate_hits = mae_hits = 0
    for seed in range(10):
        campaign = run_campaign(_spec(seed), tmp_path / f"c{seed}")
        summary = campaign.audit.summary()
        audit = set(campaign.audit.ids())
        assert summary.labelled == summary.size == 24 and len(audit) == 24
        assert summary.rounds and summary.enrichment is not None
        true_rate, true_mae, _ = _truth(campaign)
        e = summary.enrichment
        rate_hits += e.hit_rate.low <= true_rate <= e.hit_rate.high
        mae = summary.rounds[-1].metrics.mae
        mae_hits += mae.low <= true_mae <= mae.high
        for m in campaign.state.models():  # never trained (nor validated) on an audit item
            split = load_model(campaign.ws, m["model_id"]).meta.get("split_ids") or {}
            assert not audit & {i for part in split.values() for i in part}
        assert campaign.state.spent("calculations") <= 60
        assert len(campaign.state.labels("formation_energy_per_atom", "lookup")) == 24 + 8 + 2 * 8
    assert rate_hits >= 8, rate_hits
    assert mae_hits >= 8, mae_hits


def test_the_audit_estimator_covers_the_truth_over_many_draws_on_the_real_pool(settings, tmp_path):
    """The real draw on a real pool with a trained model: over 200 audit draws of 24 items, the
    95 % intervals of the MAE and of the hit rate hold the truth at least 85 % of the time."""
    campaign = run_campaign(_spec(0, rounds=1), tmp_path / "c")
    true_rate, true_mae, t = _truth(campaign)
    err = dict(zip(t["rest"], np.abs(t["pred"].mean - np.array([t["y"][i] for i in t["rest"]])), strict=True))
    std = dict(zip(t["rest"], t["pred"].std, strict=True))
    mae_in = rate_in = 0
    for seed in range(200):
        ids = draw_audit(t["rest"], 24, seed)
        m = error_metrics(np.array([err[i] for i in ids]), np.zeros(24), np.array([std[i] for i in ids]))
        mae_in += m.mae.low <= true_mae <= m.mae.high
        hits = sum(in_window(t["y"][i], WINDOW) for i in draw_audit(t["eligible"], 24, seed))
        rate = proportion_interval(hits, 24)
        rate_in += rate.low <= true_rate <= rate.high
    assert mae_in >= 170, mae_in
    assert rate_in >= 180, rate_in


def test_a_resumed_campaign_keeps_its_draw_and_computes_nothing_twice(settings, tmp_path):
    spec = _spec(3, rounds=1)
    first = run_campaign(spec, tmp_path / "a")
    again = run_campaign(None, tmp_path / "a", resume=True)  # type: ignore[arg-type]
    assert again.audit.ids() == first.audit.ids()
    assert again.state.spent("calculations") == first.state.spent("calculations")
    other = run_campaign(spec, tmp_path / "b")
    assert other.audit.ids() == first.audit.ids()  # reproducible from the seed
    assert run_campaign(_spec(4, rounds=1), tmp_path / "c").audit.ids() != first.audit.ids()


class GreedyPlanner:
    """A planner that tries to calculate the audit items and to spend the whole budget on its own."""

    name = "greedy"

    def run(self, campaign: Campaign) -> str:
        plan = campaign.audit.plan
        assert plan is not None
        campaign.start_round(1)
        out = campaign.toolbox.call(
            "queue_validation",
            {"slice_id": plan["pool_slice"], "item_ids": plan["ids"][-4:], "level": "lookup"},
        )
        self.audit_refusal = out.message
        pool = [i for i in load_slice(campaign.ws, plan["pool_slice"]).ids if i not in set(plan["ids"])]
        out = campaign.toolbox.call(
            "queue_validation",
            {"slice_id": plan["pool_slice"], "item_ids": [*plan["ids"][-2:], *pool[:100]], "level": "lookup"},
        )
        self.queued = [s.item_id for s in out.result.statuses]
        self.verdicts = out.verdicts
        return "spent what it could"


def test_no_planner_can_calculate_the_audit_items_or_spend_their_budget(settings, tmp_path):
    planner = GreedyPlanner()
    campaign = run_campaign(_spec(5, rounds=3), tmp_path / "g", planner=planner)
    audit = set(campaign.audit.ids())
    assert "reserved for the random audit set" in planner.audit_refusal
    assert not audit & set(planner.queued)
    assert any(v["check"] == "audit" for v in planner.verdicts)
    assert len(planner.queued) == 60 - 24  # trimmed to the budget left besides the audit
    summary = campaign.audit.summary(calibration=False)
    assert summary.labelled == 24  # the audit ran anyway, after the planner stopped
    assert campaign.state.spent("calculations") == 60


def test_audit_off_in_yaml_and_a_discovery_report_with_found_vs_random(settings, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("audit: off\nlevel: lookup\n")
    assert CampaignSpec.from_yaml(path).audit.enabled is False
    assert CampaignSpec.model_validate(yaml.safe_load("audit: {fraction: 0.2}")).audit.min_items == 8

    target = {"property": "formation_energy_per_atom", "goal": "minimize", "window": list(WINDOW)}
    out = tmp_path / "min"
    campaign = run_campaign(_spec(1, target=target), out)  # the shape of examples/discover.yaml
    summary = campaign.audit.summary()
    best, found = summary.best, summary.enrichment
    assert best is not None and best.audit_n == 24
    assert best.best == min(lb["value"] for lb in campaign.own_labels())
    assert found is not None and found.n == len(campaign.own_labels()) == 24
    assert found.found == sum(in_window(lb["value"], WINDOW) for lb in campaign.own_labels())
    html = (out / "report.html").read_text()
    for text in ("Learning curve on the audit set", "Calibration on the audit set", "Found vs expected"):
        assert text in html
    assert html.index("Learning curve on the audit set") < html.index("Parity")
    assert html.count("<i>How:</i>") == html.count("data:image/png") == 4  # every figure says how
    status = CliRunner().invoke(app, ["campaign", "status", str(out)])
    assert status.exit_code == 0, status.output
    for text in ("audit MAE", "enhancement over random", "P(random reaches it)"):
        assert text in status.output


def test_the_discovery_example_leaves_its_rounds_their_budget():
    spec = CampaignSpec.from_yaml(Path(__file__).parents[2] / "examples" / "discover.yaml")
    assert spec.audit.enabled and spec.target.goal == "minimize" and spec.target.window is not None
    audit = audit_size(
        spec.budget.calculations, spec.pool.max_items or 0, fraction=spec.audit.fraction, min_items=8
    )
    assert spec.budget.calculations - audit == spec.seed_size + spec.rounds * spec.batch_size


def test_a_small_budget_keeps_the_larger_share_for_the_campaign(settings, tmp_path: Path):
    spec = _spec(2, budget={"calculations": 12, "cpu_hours": 10, "llm_tokens": 0}, rounds=1, seed_size=4)
    campaign = run_campaign(spec, tmp_path / "s")
    assert len(campaign.audit.ids()) == 6  # the minimum of 8 is capped at half the budget
    assert len(campaign.own_labels()) == 6 and campaign.state.spent("calculations") == 12
