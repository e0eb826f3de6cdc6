"""Fine-tuning copies the model; a frozen backbone changes only the heads."""

from __future__ import annotations

import numpy as np
import torch

from matloop.models.training import fine_tune_uq_model, fit_uq_model


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_frozen_backbone_changes_only_head(crystal_data):
    graphs, y = crystal_data["train"]
    model = fit_uq_model(graphs[:60], y[:60], *crystal_data["val"], epochs=5, ensemble_size=2)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    new_y = 2.0 * y[60:] + 1.0  # another property of the same structures
    tuned = fine_tune_uq_model(
        model, graphs[60:], new_y, [], [], freeze_backbone=True, epochs=5, seed=1, new_target=True
    )
    assert not _changed(original, model.state_dict()), "the parent model must not change"
    changed = _changed(original, tuned.state_dict())
    assert changed, "the head must train"
    targets = {"y_mean", "y_std", "sigma_scale", "label_range"}  # the new property's normalisation
    assert all(".head." in k or k in targets for k in changed), sorted(changed)
    assert {k for k in changed if ".head." in k} == {k for k in original if ".head." in k}
    assert tuned.y_mean.item() == np.mean(new_y)
    assert tuned.meta["freeze_backbone"] is True


def test_fine_tune_improves_on_new_property(crystal_data):
    graphs, y = crystal_data["train"]
    model = fit_uq_model(graphs, y, *crystal_data["val"], method="gp", epochs=20)
    new_y = -3.0 * y + 5.0
    test_g, test_y = crystal_data["test"]
    tuned = fine_tune_uq_model(model, graphs, new_y, [], [], epochs=10, new_target=True)
    err_before = np.abs(model.predict(test_g).mean - (-3.0 * test_y + 5.0)).mean()
    err_after = np.abs(tuned.predict(test_g).mean - (-3.0 * test_y + 5.0)).mean()
    assert err_after < 0.2 * err_before
    assert tuned.gp is not None and tuned.gp is not model.gp
