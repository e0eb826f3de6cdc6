"""Calibration metrics on distributions whose calibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from matloop.models.metrics import miscalibration_area, uq_metrics


def test_calibrated_gaussian():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.1, 2.0, 20_000)
    y = rng.normal(0.0, std)
    m = uq_metrics(y, np.zeros_like(y), std)
    assert m.miscalibration_area < 0.01
    assert m.coverage_68 == pytest.approx(0.6827, abs=0.01)
    assert m.coverage_95 == pytest.approx(0.95, abs=0.01)
    assert m.nll == pytest.approx(np.mean(0.5 * np.log(2 * np.pi * std**2)) + 0.5, abs=0.02)
    assert m.spearman_err_std > 0.3


def test_overconfident_and_exact_errors():
    rng = np.random.default_rng(1)
    y = rng.normal(size=5000)
    assert miscalibration_area(y, np.zeros_like(y), np.full_like(y, 0.2)) > 0.3
    m = uq_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]), np.ones(4))
    assert m.mae == pytest.approx(0.5)
    assert m.rmse == pytest.approx(1.0)
    assert m.r2 == pytest.approx(1 - 4 / 5)


def test_rejects_empty_or_ragged():
    with pytest.raises(ValueError, match="equal, non-zero"):
        uq_metrics(np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="equal, non-zero"):
        uq_metrics(np.zeros(3), np.zeros(2), np.ones(3))
