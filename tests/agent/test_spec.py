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


@pytest.mark.parametrize("method", ["ensemble", "mc_dropout", "gp"])
@pytest.mark.parametrize(("backbone", "blocks"), [("chgnet", 1), ("sevennet_0", "all"), ("chgnet", 0)])
def test_model_section_fine_tunes_under_every_vector_head(method, backbone, blocks):
    model = CampaignSpec.model_validate(
        {"model": {"backbone": backbone, "trainable_blocks": blocks, "method": method}}
    ).model
    assert (model.method, model.backbone, model.trainable_blocks) == (method, backbone, blocks)
    warm = {"backbone": backbone, "trainable_blocks": blocks, "method": method, "warm_start": True}
    if blocks:  # a fine-tuned network continues; a frozen one's head just retrains
        assert CampaignSpec.model_validate({"model": warm}).model.warm_start
    else:
        with pytest.raises(ValidationError, match="no warm_start unless trainable_blocks"):
            CampaignSpec.model_validate({"model": warm})


def test_auto_backbone_keeps_dropout_on_the_graph_network():
    assert CampaignSpec.model_validate({"model": {"method": "mc_dropout"}}).model.needs_graph_network
    assert not CampaignSpec.model_validate({"model": {"method": "gp"}}).model.needs_graph_network


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"backbone": "chgnet", "trainable_blocks": 5}, "expected trainable_blocks 0 .* to 4"),
        ({"backbone": "sevennet_0", "trainable_blocks": 6}, "less than or equal to 5"),
        ({"backbone": "chgnet", "trainable_blocks": "some"}, "should be 'all'"),
        (
            {"trainable_blocks": 1},
            r"needs backbone 'chgnet' or 'sevennet_0', method one of \['ensemble', 'mc_dropout', 'gp'\] "
            r"and no cheap_level, got backbone 'auto'",
        ),
        (
            {"backbone": "chgnet", "trainable_blocks": 1, "method": "evidential"},
            r"method one of \['ensemble', 'mc_dropout', 'gp'\] .* got backbone 'chgnet', method 'evidential'",
        ),
        (
            {"backbone": "sevennet_0", "method": "evidential"},
            r"takes method one of \['ensemble', 'mc_dropout', 'gp'\] .* got method 'evidential'",
        ),
        ({"backbone": "chgnet", "warm_start": True}, "no warm_start"),
        ({"backbone": "chgnet", "trainable_blocks": 1, "cheap_level": "chgnet"}, "cheap_level 'chgnet'"),
        (
            {"backbone": "chgnet", "trainable_blocks": 2, "method": "mc_dropout", "cheap_level": "xtb"},
            "cheap_level 'xtb'",
        ),
    ],
)
def test_model_section_refuses_what_cannot_be_fine_tuned(model, message):
    with pytest.raises(ValidationError, match=message):
        CampaignSpec.model_validate({"model": model})
