"""UQ heads on fixed vectors (MLP ensemble, MC-dropout MLP, ARD GP, random forest): they learn, σ
grows away from the data, σ is recalibrated, checkpoints round-trip with the featurizer's provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matloop.data.composition import STATISTICS, magpie_statistics
from matloop.data.graphs import element_table
from matloop.errors import ToolInputError
from matloop.models.checkpoint import CheckpointError
from matloop.models.forest import ForestUQ
from matloop.models.foundation import get_pretrained
from matloop.models.metrics import uq_metrics
from matloop.models.vector_uq import fit_vector_model, load_vector_model, save_vector_model


def _data(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """y depends on two of eight inputs (the rest is noise an ARD kernel should ignore)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)) + shift
    return x, np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.05 * rng.normal(size=n)


@pytest.mark.parametrize(("method", "far_ratio"), [("mlp_ensemble", 1.5), ("mlp_dropout", 1.5), ("gp", 2.0)])
def test_heads_learn_and_are_more_uncertain_far_away(method, far_ratio):
    """The GP's σ is distance-aware by construction; the ensemble's grows less far from the data."""
    x, y = _data(200, 0)
    xv, yv = _data(50, 1)
    xt, yt = _data(100, 2)
    far, _ = _data(50, 3, shift=4.0)
    model = fit_vector_model(x, y, xv, yv, method=method, seed=0, epochs=200, ensemble_size=3)
    pred = model.predict(xt)
    assert uq_metrics(yt, pred.mean, pred.std).mae < 0.3 * yt.std()
    assert np.median(model.predict(far).std) > far_ratio * np.median(pred.std)
    # σ recalibrated: on the validation split, mean z² is 1
    val = model.predict(xv)
    assert np.mean(((yv - val.mean) / val.std) ** 2) == pytest.approx(1.0, rel=1e-3)


def test_gp_has_one_length_scale_per_dimension_and_finds_the_relevant_ones():
    x, y = _data(150, 0)
    model = fit_vector_model(x, y, *_data(30, 1), method="gp", seed=0)
    scales = model.gp.gp.covar_module.base_kernel.lengthscale.detach().ravel()
    assert scales.shape == (8,)
    assert scales[:2].max() < scales[2:].min()


def test_bootstrap_members_see_different_data():
    x, y = _data(80, 0)
    xv, yv = _data(20, 1)
    boot = fit_vector_model(x, y, xv, yv, seed=0, epochs=60, ensemble_size=2, bootstrap=True)
    same = fit_vector_model(x, y, xv, yv, seed=0, epochs=60, ensemble_size=2, bootstrap=False)
    assert boot.meta["bootstrap"] and not same.meta["bootstrap"]
    spread_boot = np.abs(
        np.diff(
            [m(torch.tensor(x, dtype=torch.float32))[:, 0].detach().numpy() for m in boot.members], axis=0
        )
    ).mean()
    assert spread_boot > 0


@pytest.mark.parametrize("method", ["mlp_ensemble", "mlp_dropout", "gp"])
def test_checkpoint_round_trip_records_the_pretrained_model(tmp_path, method):
    x, y = _data(60, 0)
    xv, yv = _data(20, 1)
    provenance = get_pretrained("chgnet").provenance()
    model = fit_vector_model(x, y, xv, yv, method=method, seed=0, epochs=40, ensemble_size=2, meta=provenance)
    path = save_vector_model(model, tmp_path / "head.pt")
    loaded = load_vector_model(path)
    a, b = model.predict(xv), loaded.predict(xv)
    for field in ("mean", "std", "epistemic_std", "embedding"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-6)
    assert (
        loaded.meta["backbone"] == "chgnet"
        and loaded.meta["package_version"] == provenance["package_version"]
    )
    assert loaded.meta["pretrained_model"] == "0.3.0" and "torch" in loaded.meta["versions"]
    print(f"{method} head checkpoint: {path.stat().st_size / 1024:.0f} KiB")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_vector_model(tmp_path / "bad.pt")


def test_bad_vectors_and_targets_are_refused():
    x, y = _data(30, 0)
    xv, yv = _data(10, 1)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ToolInputError, match=r"rows \[3\]"):
        fit_vector_model(bad, y, xv, yv)
    with pytest.raises(ToolInputError, match="shape"):
        fit_vector_model(x, y, xv[:, :5], yv)
    with pytest.raises(ToolInputError, match="valid values"):
        fit_vector_model(x, y, xv, yv, method="svm")
    with pytest.raises(ToolInputError, match=r"dropout in \(0, 1\) and mc_samples >= 2 .* got 0.0, 20"):
        fit_vector_model(x, y, xv, yv, method="mlp_dropout", dropout=0.0)


def test_magpie_statistics_and_forest_baseline():
    table = element_table("magpie")
    rows = magpie_statistics([np.array([12, 8]), np.array([8, 8, 8])])
    assert rows.shape == (2, len(STATISTICS) * table.shape[1])
    d = table.shape[1]
    np.testing.assert_allclose(rows[1, :d], table[8])  # pure O: mean = the element's row
    np.testing.assert_allclose(rows[1, d : 2 * d], 0.0)  # and no spread
    np.testing.assert_allclose(rows[0, 2 * d : 3 * d], np.minimum(table[12], table[8]))
    x, y = _data(200, 0)
    xv, yv = _data(50, 1)
    xt, yt = _data(100, 2)
    forest = ForestUQ(n_estimators=100, seed=0).fit(x, y, xv, yv)
    mean, std = forest.predict(xt)
    assert uq_metrics(yt, mean, std).mae < 0.5 * yt.std()
    assert uq_metrics(yt, mean, std).spearman_err_std > 0
    mv, sv = forest.predict(xv)
    assert np.mean(((yv - mv) / sv) ** 2) == pytest.approx(1.0, rel=1e-3)


def test_a_handful_of_labels_trains_without_a_validation_split():
    """Campaigns start from a few labels: no validation items → no early stopping, no σ scale."""
    x, y = _data(4, 0)
    model = fit_vector_model(x, y, x[:0], y[:0], seed=0, epochs=50, ensemble_size=2)
    assert float(model.sigma_scale) == 1.0 and model.meta["epochs_run"] > 0
    assert np.isfinite(model.predict(_data(5, 1)[0]).mean).all()


@pytest.mark.parametrize("method", ["mlp_ensemble", "gp"])
def test_a_model_on_few_labels_never_predicts_far_outside_what_it_was_shown(method):
    """Eight labels and pool inputs a thousand standard deviations away (features that barely vary
    in training): μ stays within the labels' range widened by half its width, σ within its width."""
    x, y = _data(8, 0)
    far = np.full((5, 8), 1e3)
    model = fit_vector_model(x, y, x[:0], y[:0], method=method, seed=0, epochs=100, ensemble_size=2)
    pred = model.predict(far)
    width, pad = y.max() - y.min(), max(0.5 * (y.max() - y.min()), y.std())
    assert np.all(pred.mean >= y.min() - pad - 1e-9) and np.all(pred.mean <= y.max() + pad + 1e-9)
    assert np.all(pred.std <= width + 2 * pad + 1e-9) and np.all(pred.epistemic_std <= pred.std)
    inside = model.predict(x)
    np.testing.assert_array_less(np.abs(inside.mean - y), width)  # the training labels are not clipped
