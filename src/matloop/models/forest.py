"""Random-forest baseline with the spread of its trees as σ (recalibrated on a validation split)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import RandomForestRegressor

from matloop.models.calibrated import sigma_scale
from matloop.models.vector_uq import check_vectors


class ForestUQ:
    """Random forest regressor; μ = mean over trees, σ = scale · standard deviation over trees.

    Args:
        n_estimators: trees.
        min_samples_leaf: leaf size (larger → smoother, wider spread).
        seed: seeds bootstrap and feature sampling.
    """

    def __init__(self, *, n_estimators: int = 300, min_samples_leaf: int = 1, seed: int = 0) -> None:
        self.forest = RandomForestRegressor(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            max_features=1 / 3,
            random_state=seed,
            n_jobs=1,
        )
        self.sigma_scale = 1.0

    def _predict_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([tree.predict(x) for tree in self.forest.estimators_])
        return per_tree.mean(0), np.maximum(per_tree.std(0), 1e-9)

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> ForestUQ:
        """Fit on the training set and calibrate σ on the validation set."""
        self.forest.fit(check_vectors(x), np.asarray(y, dtype=np.float64))
        mean, std = self._predict_raw(check_vectors(x_val, x.shape[1]))
        self.sigma_scale = sigma_scale(torch.from_numpy(np.asarray(y_val) - mean), torch.from_numpy(std**2))
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and calibrated σ."""
        mean, std = self._predict_raw(check_vectors(x))
        return mean, std * self.sigma_scale
