"""train_uq_gnn / predict / fine_tune through a workspace: slice → featurize → model id."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Element, Lattice, Structure

from matloop.data.feature_sets import load_graphs
from matloop.data.slices import DatasetSlice, save_slice
from matloop.errors import ToolInputError
from matloop.models.finetuned import FineTunedCHGNet
from matloop.models.inputs import surrogate_inputs
from matloop.models.saved import load_model
from matloop.tools import (
    collect_validation,
    featurize,
    fine_tune,
    predict,
    queue_validation,
    select_candidates,
    train_uq_gnn,
)
from matloop.validation.level_values import model_items

PAIRS = [(a, b) for a in ("Li", "Na", "K", "Mg", "Ca", "Sr") for b in ("F", "Cl", "Br", "O", "S")]


@pytest.fixture
def feature_set(workspace):
    """80 rocksalt crystals; ``y`` a smooth function of composition and volume, ``y2`` another."""
    rng = np.random.default_rng(0)
    ids, structures, y = [], [], []
    for k in range(80):
        a_el, b_el = PAIRS[k % len(PAIRS)]
        a = 2.0 * float(Element(a_el).atomic_radius + Element(b_el).atomic_radius) * rng.uniform(0.95, 1.05)
        s = Structure(
            Lattice(0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])), [a_el, b_el], [[0] * 3, [0.5] * 3]
        )
        ids.append(f"rs-{k}")
        structures.append(s)
        y.append(abs(Element(a_el).X - Element(b_el).X) + 0.1 * s.volume / 2)
    y = np.array(y)
    y[[5, 17]] = np.nan  # unlabelled rows are skipped
    props = pd.DataFrame({"y": y, "y2": 3.0 - 2.0 * y, "formation_energy_per_atom": -0.5 * y})
    units = {"y": "eV", "y2": "eV/atom", "formation_energy_per_atom": "eV/atom"}
    data = DatasetSlice(ids, structures, props, units, "crystal", "test")
    workspace.settings.train.ensemble_size = 2
    return featurize(save_slice(workspace, data), workspace=workspace).feature_set_id


def test_train_predict_fine_tune(workspace, feature_set):
    epochs_seen = []
    res = train_uq_gnn(
        feature_set,
        "y",
        epochs=30,
        seed=3,
        workspace=workspace,
        progress=lambda e: epochs_seen.append(e.epoch),
    )
    assert (res.n_train, res.n_val, res.n_test, res.n_skipped) == (62, 8, 8, 2)
    assert res.unit == "eV" and res.metrics_split == "test" and res.metrics.count == 8
    assert res.metrics.mae < 0.5 and 0.0 <= res.metrics.coverage_95 <= 1.0
    assert epochs_seen[0] == 1 and len(epochs_seen) == res.epochs_run
    model = load_model(workspace, res.model_id)
    assert model.meta["target"] == "y" and model.meta["metrics"]["mae"] == res.metrics.mae
    assert len(model.meta["split_ids"]["test"]) == 8 and model.meta["data_hash"]

    pred = predict(res.model_id, feature_set, ids=["rs-0", "rs-1", "rs-2"], workspace=workspace)
    assert pred.count == 3 and pred.unit == "eV" and pred.std_avg > 0 and len(pred.lowest) == 3

    ft = fine_tune(
        res.model_id, feature_set, target="y2", freeze_backbone=True, epochs=30, workspace=workspace
    )
    assert ft.parent_model_id == res.model_id and ft.model_id != res.model_id and ft.unit == "eV/atom"
    assert ft.metrics_after.mae < ft.metrics_before.mae
    assert workspace.artifact(ft.model_id, kind="model").meta["parent_model_id"] == res.model_id


def test_train_ids_and_methods(workspace, feature_set):
    res = train_uq_gnn(
        feature_set,
        "y",
        method="mc_dropout",
        epochs=3,
        train_ids=[f"rs-{k}" for k in range(20)],
        workspace=workspace,
    )
    assert res.n_train + res.n_val + res.n_test == 18 and res.n_skipped == 2 and res.method == "mc_dropout"


def test_bad_tool_inputs(workspace, feature_set):
    with pytest.raises(ToolInputError, match=r"valid values are \['formation_energy_per_atom', 'y', 'y2'\]"):
        train_uq_gnn(feature_set, "band_gap", workspace=workspace)
    with pytest.raises(ToolInputError, match="uncertainty method"):
        train_uq_gnn(feature_set, "y", method="bnn", workspace=workspace)
    with pytest.raises(ToolInputError, match="unknown"):
        train_uq_gnn(feature_set, "y", train_ids=["rs-1", "nope"], workspace=workspace)
    with pytest.raises(ToolInputError, match="got none"):
        train_uq_gnn(feature_set, "y", train_ids=["rs-5", "rs-17"], workspace=workspace)
    with pytest.raises(ToolInputError, match="val_fraction"):
        train_uq_gnn(feature_set, "y", val_fraction=1.5, workspace=workspace)
    with pytest.raises(ToolInputError, match="features id"):
        train_uq_gnn("features-missing", "y", workspace=workspace)
    with pytest.raises(ToolInputError, match="model id"):
        fine_tune("model-missing", feature_set, workspace=workspace)


def test_backbone_and_bootstrap_from_settings(workspace, feature_set):
    workspace.settings.train.conv = "schnet"
    workspace.settings.train.bootstrap = True
    res = train_uq_gnn(feature_set, "y", epochs=5, workspace=workspace)
    model = load_model(workspace, res.model_id)
    assert model.config["conv"] == "schnet"
    assert type(model.members[0].convs[0]).__name__ == "CFConvBlock"
    assert np.isfinite(res.metrics.mae)


def test_frozen_backbone_heads_train_predict_select_and_reload(workspace, feature_set):
    """A head on frozen CHGNet + Magpie vectors (what ``auto`` picks for crystals): trained,
    reloaded by id, used to pick a batch."""
    first = [f"rs-{k}" for k in range(50)]
    res = train_uq_gnn(feature_set, "y", backbone="auto", seed=1, train_ids=first, workspace=workspace)
    assert res.metrics_split == "test" and res.metrics.mae < 0.5 and res.epochs_run > 0
    model = load_model(workspace, res.model_id)
    assert model.config["backbone"] == "chgnet+magpie" and model.meta["backbone"] == "chgnet+magpie"
    assert model.meta["pretrained"][0]["package"] == "chgnet"
    assert workspace.artifact(res.model_id, kind="model").meta["backbone"] == "chgnet+magpie"
    pred = predict(res.model_id, feature_set, ids=["rs-0", "rs-1"], workspace=workspace)
    assert pred.count == 2 and pred.std_avg > 0
    picked = select_candidates(res.model_id, feature_set, 4, strategy="batch_entropy", workspace=workspace)
    split = {i for part in model.meta["split_ids"].values() for i in part}
    assert len(picked.candidates) == 4 and not split & {c.item_id for c in picked.candidates}

    gp = train_uq_gnn(feature_set, "y", method="gp", backbone="magpie", workspace=workspace)
    assert load_model(workspace, gp.model_id).gp is not None and np.isfinite(gp.metrics.mae)
    with pytest.raises(ToolInputError, match=r"method one of \['ensemble', 'mc_dropout', 'gp'\]"):
        train_uq_gnn(feature_set, "y", method="evidential", backbone="chgnet", workspace=workspace)
    with pytest.raises(ToolInputError, match="surrogate backbone"):
        train_uq_gnn(feature_set, "y", backbone="mace", workspace=workspace)
    with pytest.raises(ToolInputError, match="train a new one"):
        fine_tune(res.model_id, feature_set, workspace=workspace)


def test_formation_energy_head_learns_the_residual_to_chgnets_static_level(workspace, feature_set):
    """Multi-fidelity for crystals: the screening level chgnet_static, queued like any level,
    feeds the head (CHGNet ⊕ Magpie ⊕ its two columns), which learns the formation energy minus
    CHGNet's and adds that back; without the level's results the tool says what to queue."""
    target, level = "formation_energy_per_atom", "chgnet_static"
    with pytest.raises(ToolInputError, match=f"queue_validation at level '{level}'"):
        train_uq_gnn(feature_set, target, backbone="auto", cheap_level=level, workspace=workspace)
    graphs = load_graphs(feature_set, workspace=workspace)
    ids = graphs.ids[:40]
    batch = queue_validation(graphs.meta["slice_id"], ids, level=level, workspace=workspace)
    assert not collect_validation(batch.batch_id, timeout_s=300, workspace=workspace).failures
    res = train_uq_gnn(
        feature_set,
        target,
        "ensemble",
        backbone="auto",
        cheap_level=level,
        train_ids=ids,
        workspace=workspace,
    )
    model = load_model(workspace, res.model_id)
    columns = [f"energy_per_atom@{level}", f"{target}@{level}"]
    assert model.config["backbone"] == "chgnet+magpie"  # what auto picks for crystals
    assert model.config["level_columns"] == columns and model.config["delta"] == f"{target}@{level}"
    items = model_items(graphs, workspace, model.meta).take(range(6))
    x, baseline = surrogate_inputs("chgnet+magpie", items, columns, f"{target}@{level}")
    assert np.isfinite(baseline).all() and baseline.min() < -1.0  # ionic rock salts are stable
    np.testing.assert_allclose(model.predict_items(items).mean, model.predict(x).mean + baseline, rtol=1e-9)
    assert np.isfinite(res.metrics.mae)
    # the cheap level as a ranker: its value plus the mean training offset, nothing learned per item
    cheap = model.predict_items(items, cheap_only=True)
    np.testing.assert_allclose(cheap.mean, baseline + float(model.y_mean), rtol=1e-9)
    assert np.allclose(cheap.std, float(model.y_std))
    with pytest.raises(ToolInputError, match="got none of the 40 eligible"):  # rs-40..79 were not screened
        select_candidates(res.model_id, feature_set, 2, ranking="cheap_level", workspace=workspace)


def test_fine_tuned_chgnet_trains_reloads_predicts_and_continues(workspace, feature_set):
    """CHGNet's last block fine-tuned under the heads: saved with its provenance and size, reloaded
    by id, continued on new labels (all of its trained layers, or only the heads)."""
    first = [f"rs-{k}" for k in range(30)]
    res = train_uq_gnn(
        feature_set,
        "y",
        backbone="chgnet",
        trainable_blocks=1,
        epochs=1,
        train_ids=first,
        workspace=workspace,
    )
    assert 1.0 < res.checkpoint_mb < 3.0 and np.isfinite(res.metrics.mae) and res.epochs_run > 1
    art = workspace.artifact(res.model_id, kind="model")
    assert art.meta["trainable_blocks"] == 1 and art.meta["checkpoint_bytes"] == art.path.stat().st_size
    model = load_model(workspace, res.model_id)
    assert isinstance(model, FineTunedCHGNet) and model.meta["pretrained"][0]["pretrained_model"] == "0.3.0"
    pred = predict(res.model_id, feature_set, ids=["rs-40", "rs-41"], workspace=workspace)
    assert pred.count == 2 and pred.std_avg > 0

    tuned = fine_tune(res.model_id, feature_set, epochs=1, workspace=workspace)
    child = load_model(workspace, tuned.model_id)
    assert isinstance(child, FineTunedCHGNet) and child.config["trainable_blocks"] == 1
    assert tuned.parent_model_id == res.model_id and tuned.n_train > res.n_train
    heads = fine_tune(tuned.model_id, feature_set, target="y2", freeze_backbone=True, workspace=workspace)
    frozen = load_model(workspace, heads.model_id)
    assert frozen.meta["target"] == "y2" and frozen.meta["finetune_epochs"] == 0
    for name, value in frozen.network.state_dict().items():
        assert torch.equal(value, child.network.state_dict()[name]), name

    expected = (
        r"backbone 'chgnet' or 'sevennet_0', method one of \['ensemble', 'mc_dropout', 'gp'\] and no cheap"
    )
    with pytest.raises(ToolInputError, match=expected):
        train_uq_gnn(feature_set, "y", backbone="gnn", trainable_blocks=2, workspace=workspace)
    with pytest.raises(ToolInputError, match=rf"{expected}.* method 'evidential'"):
        train_uq_gnn(
            feature_set, "y", "evidential", backbone="chgnet", trainable_blocks=1, workspace=workspace
        )
    with pytest.raises(ToolInputError, match="expected trainable_blocks"):
        train_uq_gnn(feature_set, "y", backbone="chgnet", trainable_blocks=5, workspace=workspace)


@pytest.mark.parametrize(("method", "head"), [("mc_dropout", "mlp_dropout"), ("gp", "gp")])
def test_fine_tuned_chgnet_under_dropout_and_gp_heads(workspace, feature_set, method, head):
    """The method's head on CHGNet's last block fine-tuned: saved, reloaded by id, predicted; its head
    retrained on a frozen copy of the network by fine_tune; the frozen featurizer takes it too."""
    first = [f"rs-{k}" for k in range(30)]
    res = train_uq_gnn(
        feature_set,
        "y",
        method,
        epochs=1,
        backbone="chgnet",
        trainable_blocks=1,
        train_ids=first,
        workspace=workspace,
    )
    model = load_model(workspace, res.model_id)
    assert isinstance(model, FineTunedCHGNet) and model.method == head and res.method == method
    assert model.meta["trainable_blocks"] == 1 and model.meta["pretrained"][0]["pretrained_model"] == "0.3.0"
    assert np.isfinite(res.metrics.mae) and res.sigma_scale > 0
    pred = predict(res.model_id, feature_set, ids=["rs-40", "rs-41"], workspace=workspace)
    assert pred.count == 2 and np.isfinite(pred.std_max) and pred.std_avg > 0

    heads = fine_tune(res.model_id, feature_set, freeze_backbone=True, workspace=workspace)
    child = load_model(workspace, heads.model_id)
    assert child.method == head and child.meta["finetune_epochs"] == 0 and heads.method == method
    for name, value in child.network.state_dict().items():
        assert torch.equal(value, model.network.state_dict()[name]), name

    frozen = train_uq_gnn(feature_set, "y", method, backbone="chgnet", train_ids=first, workspace=workspace)
    frozen_model = load_model(workspace, frozen.model_id)
    assert not isinstance(frozen_model, FineTunedCHGNet) and frozen_model.method == head
    assert np.isfinite(frozen.metrics.mae) and frozen.sigma_scale > 0
