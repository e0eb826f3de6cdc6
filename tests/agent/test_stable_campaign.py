"""A campaign with goal ``stable`` at level ``lookup`` on the bundled Materials Project phases: the
ternaries of a few elements are the pool, their binaries the reference phases of the hull."""

from __future__ import annotations

import pytest

from matloop.agent.campaign import run_campaign
from matloop.agent.hull import campaign_hull
from matloop.agent.spec import CampaignSpec
from matloop.data.slices import load_slice

ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Al", "Si", "O", "S", "F", "Cl"]


#: The campaign of this module: the ternaries of ELEMENTS at level lookup, their binaries the references.
SPEC = {
    "name": "stable-lookup",
    "planner": "rules",
    "pool": {"source": "mp_formation_energy", "query": {"elements": ELEMENTS, "n_elements": 3}},
    "target": {
        "property": "formation_energy_per_atom",
        "goal": "stable",
        "window": [None, 0.025],
        "references": {"source": "mp_formation_energy", "max_elements": 2},
    },
    "level": "lookup",
    "model": {"backbone": "magpie", "ensemble_size": 2, "cheap_level": "none"},
    "seed_size": 8,
    "batch_size": 6,
    "rounds": 2,
    "budget": {"calculations": 100, "cpu_hours": 10, "llm_tokens": 0},
    "audit": {"min_items": 6, "fraction": 0.1},
}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return run_campaign(CampaignSpec.model_validate(SPEC), tmp_path_factory.mktemp("stable") / "c")


def test_reference_phases_are_computed_at_the_level_and_charged(campaign):
    refs = campaign.state.step("setup:references")["result"]
    ref_ids = set(load_slice(campaign.ws, refs["slice_id"]).ids)
    labelled = {lb["item_id"] for lb in campaign.state.labels("formation_energy_per_atom", "lookup")}
    assert len(ref_ids) > 20 and ref_ids <= labelled
    used = 100 - campaign.guardrails.remaining()["calculations"]
    assert used >= len(ref_ids) + 8 + 2 * 6
    hull, _ = campaign_hull(campaign)
    assert {p.item_id for p in hull.references} == ref_ids
    # the count is stated before the planner's first calculation (the seed set)
    records = campaign.log.records()
    note = next(
        k for k, r in enumerate(records) if "reference phases to compute" in (r.get("rationale") or "")
    )
    seeds = next(k for k, r in enumerate(records) if (r.get("rationale") or "").startswith("seed set"))
    assert note < seeds and f"{len(ref_ids)} reference phases" in records[note]["rationale"]
    plan = next(r for r in records if (r.get("rationale") or "").startswith("plan: "))
    assert plan["step"] < records[seeds]["step"] and plan["result"]["plan"]["references"]["count"] == len(
        ref_ids
    )


def test_selection_ranks_the_predicted_distance_to_the_hull(campaign):
    step = campaign.state.step("r1:select")["step"]
    args = next(
        r["arguments"] for r in campaign.log.records() if r["step"] == step and r["phase"] == "planned"
    )
    assert args["hull_level"] == "lookup" and args["goal"] == "minimize"


def test_hits_are_pool_items_near_the_current_hull_and_the_report_shows_them(campaign):
    _, scores = campaign_hull(campaign)
    distance = {s.item_id: s.e_above_hull for s in scores}
    found = campaign.found()
    assert found and all(distance[h["item_id"]] <= 0.025 for h in found)
    summary = campaign.audit.summary()
    assert summary.enrichment is not None
    report = (campaign.ws.root / "report.html").read_text()
    section = report.split("Stable crystals (convex hull at level lookup)")[1].split("<h2>")[0]
    assert found[0]["item_id"] in section and "data:image/png" in section  # a hull plot


def test_resume_keeps_the_references_and_computes_none_twice(campaign):
    """A resumed campaign (more rounds) reads the hull's points back: no reference phase is
    queued again and the hull's references are the same."""
    before, _ = campaign_hull(campaign)
    spec_file = campaign.ws.root / "campaign.yaml"
    spec = CampaignSpec.from_yaml(spec_file).model_copy(update={"rounds": 3})
    spec_file.write_text(spec.to_yaml())
    resumed = run_campaign(spec_file, campaign.ws.root, resume=True)
    after, scores = campaign_hull(resumed)
    assert [(p.item_id, p.formation_energy_per_atom) for p in after.references] == [
        (p.item_id, p.formation_energy_per_atom) for p in before.references
    ]
    ref_ids = {p.item_id for p in before.references}
    queued = [
        r
        for r in resumed.log.records()
        if r.get("tool") == "queue_validation" and r.get("phase") == "planned"
    ]
    assert sum(bool(ref_ids & set(r["arguments"]["item_ids"])) for r in queued) == 1
    assert len(scores) > len(before.candidates)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    """The same campaign with CHGNet single points as the cheap level: the surrogate learns the
    label minus CHGNet's, and each batch is split between its ranking and CHGNet's own."""
    model = {**SPEC["model"], "cheap_level": "chgnet_static"}
    spec = CampaignSpec.model_validate({**SPEC, "name": "stable-screened", "model": model, "rounds": 3})
    return run_campaign(spec, tmp_path_factory.mktemp("screened") / "c")


def test_batches_are_split_between_the_surrogate_and_its_cheap_level_by_their_hits(screened):
    state, hits = screened.state, {h["item_id"] for h in screened.found()}
    notes = [r["rationale"] for r in screened.log.records() if "hits so far by" in (r.get("rationale") or "")]
    assert len(notes) == 3 and "surrogate 0/0, cheap_level 0/0" in notes[0]
    picks = [c for c in state.candidates() if c["round"] > 0]
    by_ranking = {}
    for c in picks:
        ranking = screened.ws.artifact(c["selection_id"], kind="selection").meta["ranking"]
        by_ranking.setdefault(ranking, []).append(c)
    assert set(by_ranking) == {"surrogate", "cheap_level"}
    assert len(picks) == 3 * 6 and len({c["item_id"] for c in picks}) == len(picks)
    # the last round's note counts the earlier rounds' picks of each ranking and their hits
    earlier = {r: [c for c in cs if c["round"] < 3] for r, cs in by_ranking.items()}
    for ranking, cs in earlier.items():
        assert f"{ranking} {sum(c['item_id'] in hits for c in cs)}/{len(cs)}" in notes[2]
    # the cheap level ranks the same distance to the hull as the surrogate
    step = state.step("r1:select-cheap_level")["step"]
    records = screened.log.records()
    args = next(r["arguments"] for r in records if r["step"] == step and r["phase"] == "planned")
    assert args["ranking"] == "cheap_level" and args["hull_level"] == "lookup" and args["goal"] == "minimize"
