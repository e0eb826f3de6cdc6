"""Accuracy and calibration of a Gaussian predictive distribution on held-out data.

The interval and rank statistics here (:func:`inside`, :func:`rank_correlation`) are the only
implementation: the audit set's statistics (:mod:`matloop.audit_stats`) build on them."""

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


#: Half-width of the central 95 % Gaussian interval, in σ.
Z95 = float(norm.ppf(0.975))


def inside(abs_err: np.ndarray, std: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Whether each target lies inside the central interval μ ± z·σ (``z`` a scalar or one per row
    of a column vector, giving one row per ``z``)."""
    return abs_err <= z * std


def rank_correlation(abs_err: np.ndarray, std: np.ndarray) -> float | None:
    """Spearman rank correlation of |error| with σ; ``None`` where it is undefined (fewer than
    three items, or either side constant)."""
    if len(abs_err) < 3 or np.ptp(abs_err) == 0 or np.ptp(std) == 0:
        return None
    return float(spearmanr(abs_err, std).statistic)


def miscalibration_area(y: np.ndarray, mean: np.ndarray, std: np.ndarray, n_bins: int = 100) -> float:
    """Miscalibration area of centred prediction intervals (Tran et al. 2020; uncertainty-toolbox).

    For expected proportions p on an even grid in [0, 1], the observed proportion is the
    fraction of targets inside the centred interval of probability p; the area is the
    integral of |observed − expected| over p.
    """
    expected = np.linspace(0.0, 1.0, n_bins)
    bounds = norm.ppf(0.5 + expected / 2.0)
    observed = inside(np.abs(y - mean)[None, :], std[None, :], bounds[:, None]).mean(axis=1)
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
    abs_err = np.abs(err)
    nll = float(np.mean(0.5 * np.log(2 * math.pi * std**2) + 0.5 * (abs_err / std) ** 2))
    spearman = rank_correlation(abs_err, std)
    return UQMetrics(
        mae=float(np.mean(np.abs(err))),
        rmse=float(np.sqrt(np.mean(err**2))),
        r2=r2,
        nll=nll,
        miscalibration_area=miscalibration_area(y, mean, std),
        spearman_err_std=float("nan") if spearman is None else spearman,
        coverage_68=float(np.mean(inside(abs_err, std, 1.0))),
        coverage_95=float(np.mean(inside(abs_err, std, Z95))),
        count=len(y),
    )
