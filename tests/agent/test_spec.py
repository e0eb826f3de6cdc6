"""The campaign spec's model section: which surrogate a campaign trains every round."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from matloop.agent.spec import CampaignSpec


def test_model_section_selects_a_fine_tuned_chgnet():
    spec = CampaignSpec.model_validate(
        {"model": {"backbone": "chgnet", "trainable_blocks": "all", "warm_start": True}}
    )
    assert spec.model.trainable_blocks == "all" and not spec.model.needs_graph_network
    assert (
        CampaignSpec.model_validate(
            {"model": {"backbone": "chgnet", "trainable_blocks": 2}}
        ).model.trainable_blocks
        == 2
    )
    assert CampaignSpec().model.trainable_blocks == 0  # frozen unless asked


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "chgnet", "trainable_blocks": 5}, "expected trainable_blocks 0 .* to 4"),
        ({"backbone": "sevennet_0", "trainable_blocks": 6}, "less than or equal to 5"),
        ({"backbone": "chgnet", "trainable_blocks": "some"}, "should be 'all'"),
        (
            {"trainable_blocks": 1},
            r"needs backbone 'chgnet' or 'sevennet_0', method 'ensemble' and no cheap_level, "
            r"got backbone 'auto'",
        ),
        (
            {"backbone": "chgnet", "trainable_blocks": 1, "method": "gp"},
            "got backbone 'chgnet', method 'gp'",
        ),
        ({"backbone": "chgnet", "warm_start": True}, "no warm_start"),
        ({"backbone": "chgnet", "trainable_blocks": 1, "cheap_level": "chgnet"}, "cheap_level 'chgnet'"),
    ],
)
def test_model_section_refuses_what_cannot_be_fine_tuned(model, message):
    with pytest.raises(ValidationError, match=message):
        CampaignSpec.model_validate({"model": model})
