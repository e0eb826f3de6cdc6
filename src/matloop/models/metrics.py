"""Accuracy and calibration of a Gaussian predictive distribution on held-out data."""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import norm, spearmanr


class UQMetrics(BaseModel):
    """Accuracy and calibration on a held-out split (in the target's unit)."""

    mae: float = Field(description="Mean absolute error.")
    rmse: float = Field(description="Root-mean-square error.")
    r2: float = Field(description="Coefficient of determination.")
    nll: float = Field(description="Mean Gaussian negative log-likelihood (lower is better).")
    miscalibration_area: float = Field(
        description="Area between observed and expected coverage of centred intervals (0 ideal, 0.5 worst)."
    )
    spearman_err_std: float = Field(description="Spearman rank correlation of |error| with predicted σ.")
    coverage_68: float = Field(description="Fraction of targets inside μ ± 1σ (0.683 ideal).")
    coverage_95: float = Field(description="Fraction of targets inside μ ± 1.96σ (0.95 ideal).")
    count: int = Field(description="Number of held-out items the metrics were computed on.")


def miscalibration_area(y: np.ndarray, mean: np.ndarray, std: np.ndarray, n_bins: int = 100) -> float:
    """Miscalibration area of centred prediction intervals (Tran et al. 2020; uncertainty-toolbox).

    For expected proportions p on an even grid in [0, 1], the observed proportion is the
    fraction of targets inside the centred interval of probability p; the area is the
    integral of |observed − expected| over p.
    """
    expected = np.linspace(0.0, 1.0, n_bins)
    z = np.abs(y - mean) / std
    bounds = norm.ppf(0.5 + expected / 2.0)
    observed = (z[None, :] <= bounds[:, None]).mean(axis=1)
    return float(np.trapezoid(np.abs(observed - expected), expected))


def uq_metrics(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> UQMetrics:
    """All metrics for targets ``y`` and a Gaussian prediction (``mean``, ``std``)."""
    y, mean, std = (np.asarray(a, dtype=np.float64).ravel() for a in (y, mean, std))
    if not len(y) == len(mean) == len(std) or len(y) == 0:
        raise ValueError(f"need equal, non-zero lengths, got y={len(y)}, mean={len(mean)}, std={len(std)}")
    std = np.maximum(std, 1e-12)
    err = y - mean
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan")
    z = np.abs(err) / std
    nll = float(np.mean(0.5 * np.log(2 * math.pi * std**2) + 0.5 * z**2))
    spearman = (
        float(spearmanr(np.abs(err), std).statistic) if len(y) > 2 and np.ptp(std) > 0 else float("nan")
    )
    return UQMetrics(
        mae=float(np.mean(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        r2=r2,
        nll=nll,
        miscalibration_area=miscalibration_area(y, mean, std),
        spearman_err_std=spearman,
        coverage_68=float(np.mean(z <= 1.0)),
        coverage_95=float(np.mean(z <= 1.959964)),
        count=len(y),
    )
