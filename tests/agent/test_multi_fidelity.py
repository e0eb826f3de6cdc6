"""Multi-fidelity campaigns: a screening level (GFN2-xTB) runs on the whole pool through the
validation machinery, is charged to the budget, and its results feed the surrogate."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from matloop.agent.campaign import Campaign, run_campaign
from matloop.agent.spec import CampaignSpec
from matloop.data.feature_sets import load_graphs
from matloop.data.items import Items
from matloop.models.inputs import surrogate_inputs
from matloop.models.saved import load_model
from matloop.validation.level_values import model_items
from matloop.validation.levels import SCREENING_CHARGE
from matloop.validation.store import ValidationStore

POOL, SEED, BATCH, ROUNDS = 40, 8, 4, 2
COLUMNS = ["energy@xtb", "gap@xtb", "homo@xtb", "lumo@xtb"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Iterator[Campaign]:
    """A lookup campaign minimising the QM9 gap on 40 molecules with the default surrogate."""
    root = tmp_path_factory.mktemp("multi-fidelity")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MATLOOP_CACHE_DIR", str(root / "cache"))
        mp.setenv("MATLOOP_WORKSPACE", str(root / "ws"))
        spec = CampaignSpec.model_validate(
            {
                "name": "qm9-gap",
                "planner": "rules",
                "pool": {"source": "qm9", "max_items": POOL},
                "target": {"property": "gap", "goal": "minimize"},
                "level": "lookup",
                "seed_size": SEED,
                "batch_size": BATCH,
                "rounds": ROUNDS,
                "budget": {"calculations": SEED + BATCH * ROUNDS, "cpu_hours": 10, "llm_tokens": 0},
                "audit": "off",
            }
        )
        yield run_campaign(spec, root / "campaign")


def _pool_items(campaign: Campaign, meta: dict) -> tuple[list[str], Items]:
    graphs = load_graphs(
        campaign.state.step("setup:featurize")["result"]["feature_set_id"], workspace=campaign.ws
    )
    return graphs.ids, model_items(graphs, campaign.ws, meta)


def test_screening_level_runs_on_the_whole_pool_and_is_charged(campaign):
    ids, _ = _pool_items(campaign, {})
    properties, values = ValidationStore(campaign.ws).level_table("xtb", ids)
    assert len(ids) == POOL and properties == [c.split("@")[0] for c in COLUMNS]
    assert np.isfinite(values).all()
    labels = len(campaign.state.labels("gap", "lookup"))
    assert labels == SEED + BATCH * ROUNDS - 1  # the xTB charge leaves room for one label less
    assert campaign.state.spent("calculations") == pytest.approx(labels + POOL * SCREENING_CHARGE)
    # every pool item has xTB labels, yet each round picked pool items for the campaign's level
    assert sorted({c["round"] for c in campaign.state.candidates()}) == [0, 1, 2]


def test_surrogate_learns_the_residual_to_the_cheap_level(campaign):
    model = load_model(campaign.ws, campaign.state.models()[-1]["model_id"])
    assert model.meta["cheap_level"] == "xtb" and model.config["backbone"] == "magpie"
    assert model.config["level_columns"] == COLUMNS and model.config["delta"] == "gap@xtb"
    _, items = _pool_items(campaign, model.meta)
    x, baseline = surrogate_inputs("magpie", items, COLUMNS, "gap@xtb")
    xtb_gap = items.level_values[:, items.level_columns.index("gap@xtb")]
    np.testing.assert_array_equal(baseline, xtb_gap)
    pred = model.predict_items(items)
    np.testing.assert_allclose(pred.mean, model.predict(x).mean + xtb_gap, rtol=1e-6)
    # an item without the cheap level's values gets the prior, not an error
    values = items.level_values.copy()
    values[0] = np.nan
    prior = model.predict_items(items.with_level_values(COLUMNS, values))
    assert prior.mean[0] == pytest.approx(model.meta["label_mean"])
    np.testing.assert_allclose(prior.mean[1:], pred.mean[1:], rtol=1e-6)
