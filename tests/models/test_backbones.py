"""The SchNet backbone, bootstrapped ensemble members and the ARD last-layer GP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matloop.errors import ToolInputError
from matloop.models.layers import CFConvBlock
from matloop.models.metrics import uq_metrics
from matloop.models.model import load_checkpoint, save_checkpoint
from matloop.models.training import TrainOptions, bootstrap_sample, fit_uq_model


def test_schnet_backbone_learns_and_round_trips(crystal_data, tmp_path):
    model = fit_uq_model(
        *crystal_data["train"], *crystal_data["val"], seed=0, epochs=60, ensemble_size=2, conv="schnet"
    )
    assert all(isinstance(c, CFConvBlock) for c in model.members[0].convs)
    graphs, y = crystal_data["test"]
    pred = model.predict(graphs)
    assert uq_metrics(y, pred.mean, pred.std).mae < 0.5 * y.std()
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "schnet.pt"))
    assert loaded.config["conv"] == "schnet"
    np.testing.assert_allclose(loaded.predict(graphs).mean, pred.mean, rtol=1e-5)


def test_schnet_block_is_invariant_to_node_order(crystal_data):
    torch.manual_seed(0)
    graph = crystal_data["train"][0][0]
    block = CFConvBlock(8, graph.edge_attr.shape[1])
    x = torch.randn(graph.num_nodes, 8)
    perm = torch.randperm(graph.num_nodes)
    inverse = torch.argsort(perm)
    out = block(x, graph.edge_index, graph.edge_attr)
    out_perm = block(x[perm], inverse[graph.edge_index], graph.edge_attr)
    torch.testing.assert_close(out_perm, out[perm])


def test_unknown_convolution_is_refused(crystal_data):
    with pytest.raises(ToolInputError, match="valid values"):
        fit_uq_model(*crystal_data["train"], *crystal_data["val"], epochs=1, conv="painn")


def test_bootstrap_members_train_on_resamples(crystal_data):
    graphs, y = crystal_data["train"]
    data = (graphs, torch.as_tensor(y, dtype=torch.float32))
    first, again, other = bootstrap_sample(data, 3), bootstrap_sample(data, 3), bootstrap_sample(data, 4)
    ids = [[g.item_id for g in s[0]] for s in (first, again, other)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert len(ids[0]) == len(graphs) and len(set(ids[0])) < len(graphs)  # drawn with replacement
    opts = TrainOptions(epochs=40, bootstrap=True)
    model = fit_uq_model(*crystal_data["train"], *crystal_data["val"], seed=0, options=opts, ensemble_size=3)
    test_graphs, test_y = crystal_data["test"]
    pred = model.predict(test_graphs)
    assert uq_metrics(test_y, pred.mean, pred.std).mae < 0.5 * test_y.std()
    assert np.all(pred.epistemic_std > 0)


def test_last_layer_gp_has_an_ard_kernel(crystal_data, tmp_path):
    model = fit_uq_model(*crystal_data["train"], *crystal_data["val"], method="gp", seed=0, epochs=30)
    kernel = model.gp.gp.covar_module.base_kernel
    assert kernel.lengthscale.shape[-1] == model.config["hidden"]
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "gp.pt"))
    graphs = crystal_data["test"][0]
    np.testing.assert_allclose(loaded.predict(graphs).std, model.predict(graphs).std, rtol=1e-6)
