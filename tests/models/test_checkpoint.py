"""Checkpoints reproduce predictions exactly; bad files give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matloop.errors import ToolInputError
from matloop.models.checkpoint import CheckpointError
from matloop.models.model import load_checkpoint, save_checkpoint
from matloop.models.saved import load_model, save_model
from matloop.models.training import fit_uq_model


@pytest.mark.parametrize("method", ["ensemble", "mc_dropout", "evidential", "gp"])
def test_round_trip_reproduces_predictions(crystal_data, tmp_path, method):
    graphs, y = crystal_data["train"]
    model = fit_uq_model(graphs[:60], y[:60], *crystal_data["val"], method=method, epochs=4, ensemble_size=2)
    path = save_checkpoint(model, tmp_path / "m.pt", {"target": "y", "unit": "eV"})
    loaded = load_checkpoint(path)
    test = crystal_data["test"][0] + crystal_data["ood"][0]
    a, b = model.predict(test), loaded.predict(test)
    for field in ("mean", "std", "embedding", "epistemic_std"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert loaded.meta["target"] == "y" and loaded.meta["seed"] == 0
    assert "torch" in loaded.meta["versions"]
    assert float(loaded.sigma_scale) == float(model.sigma_scale)


def test_workspace_registration(crystal_data, workspace):
    graphs, y = crystal_data["train"]
    model = fit_uq_model(graphs[:30], y[:30], [], [], epochs=2, ensemble_size=1)
    model_id = save_model(workspace, model, {"target": "y", "unit": "eV", "method": "ensemble"})
    art = workspace.artifact(model_id, kind="model")
    assert art.path.parent == workspace.dir("models") and art.meta["target"] == "y"
    np.testing.assert_array_equal(
        load_model(workspace, model_id).predict(graphs).mean, model.predict(graphs).mean
    )
    with pytest.raises(ToolInputError, match="model id"):
        load_model(workspace, "model-nope")


def test_corrupt_and_mismatched_checkpoints(crystal_data, tmp_path):
    graphs, y = crystal_data["train"]
    model = fit_uq_model(graphs[:30], y[:30], [], [], epochs=1, ensemble_size=1)
    path = save_checkpoint(model, tmp_path / "m.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a matloop"):
        load_checkpoint(other)
    blob = torch.load(path, weights_only=True)
    blob["init_args"]["hidden"] = 32
    torch.save(blob, other)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(other)
