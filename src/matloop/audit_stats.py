"""What a random audit set says about a campaign: pure statistics, no campaign objects.

An audit set is a uniform random sample of the campaign's (filtered) candidate pool, labelled at
the campaign's level and never used for training. It gives

- an unbiased test of every round's model (:func:`error_metrics`: MAE and RMSE with bootstrap
  intervals, coverage of the 68/95 % intervals, Spearman of |error| vs σ; :func:`calibration_curve`);
- the pool's hit rate ``p`` for a target window (:func:`proportion_interval`, Clopper–Pearson), hence
  the hits random selection would be expected to find with the campaign's ``n`` calculations
  (``n·p``) and the campaign's enhancement over random (:func:`enrichment`);
- for minimize/maximize goals, the share of the pool at least as good as the campaign's best and
  the chance that ``n`` random picks would have matched it (:func:`best_vs_random`);
- for learning goals, how much more error the campaign's picks carried than random picks would have
  under the same round models (:func:`informativeness`) — what uncertainty sampling is for.

Assumptions: the audit items are a uniform sample of the same filtered pool the campaign picks
from (the campaign's picks are excluded from it, which changes the pool by a negligible share when
the pool is much larger than the campaign), and labels are deterministic given the item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy import stats

from matloop.models.metrics import Z95, inside, rank_correlation

#: Confidence level of every interval reported.
LEVEL = 0.95
#: Bootstrap resamples of the error intervals.
N_BOOTSTRAP = 2000


def audit_size(budget: int, pool: int, *, fraction: float, min_items: int) -> int:
    """Audit items for a calculation budget: ``max(min_items, ⌈fraction·budget⌉)``, at most half the
    budget (the campaign keeps the larger share) and at most half the pool."""
    want = max(min_items, math.ceil(fraction * budget))
    return max(0, min(want, budget // 2, pool // 2))


def audit_schedule(size: int, rounds: int) -> list[int]:
    """Audit items per round ``0 … rounds``: spread evenly, earlier rounds getting the remainder, so
    the first models already have a test."""
    slots = rounds + 1
    return [size // slots + (1 if r < size % slots else 0) for r in range(slots)]


def draw_audit(eligible: Sequence[str], size: int, seed: int) -> list[str]:
    """``size`` items drawn uniformly without replacement from ``eligible``, reproducibly from ``seed``
    (the order of ``eligible`` is part of the draw: pass it in a stable order)."""
    if size > len(eligible):
        raise ValueError(f"expected an audit of at most {len(eligible)} items, got {size}")
    rng = np.random.default_rng([seed, 0xA0D1])  # a stream of its own: other draws of the seed differ
    return [eligible[k] for k in rng.choice(len(eligible), size=size, replace=False)]


def in_window(value: float, window: tuple[float | None, float | None]) -> bool:
    """Whether ``value`` lies in ``window`` (``None``: an open end)."""
    lo, hi = window
    return (lo is None or value >= lo) and (hi is None or value <= hi)


class Interval(BaseModel):
    """An estimate with its two-sided interval (``high`` is ``inf`` when unbounded)."""

    value: float = Field(description="Point estimate.")
    low: float = Field(description="Lower end of the interval.")
    high: float = Field(description="Upper end of the interval (inf: no upper bound).")

    def text(self, digits: int = 3) -> str:
        high = "∞" if math.isinf(self.high) else f"{self.high:.{digits}g}"
        return f"{self.value:.{digits}g} [{self.low:.{digits}g}, {high}]"


class ErrorMetrics(BaseModel):
    """A model on the audit items: accuracy and calibration with intervals."""

    n: int = Field(description="Audit items with a label.")
    mae: Interval = Field(description="Mean absolute error, 95 % bootstrap interval.")
    rmse: Interval = Field(description="Root-mean-square error, 95 % bootstrap interval.")
    coverage_68: Interval = Field(description="Share of labels within μ ± σ (ideal 0.68), Clopper–Pearson.")
    coverage_95: Interval = Field(
        description="Share of labels within μ ± 1.96σ (ideal 0.95), Clopper–Pearson."
    )
    spearman: float | None = Field(
        description="Spearman rank correlation of |error| and σ (None: < 3 items)."
    )


def bootstrap_interval(
    values: np.ndarray, statistic: Callable[..., np.ndarray], *, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Percentile bootstrap interval (:func:`scipy.stats.bootstrap`, :data:`N_BOOTSTRAP` resamples,
    seeded) of ``statistic(values, axis=-1)`` over resamples of ``values``."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (-math.inf, math.inf)
    ci = _bootstrap((values,), statistic, seed=seed, level=level)
    return float(ci.low), float(ci.high)


def _bootstrap(
    data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], *, seed: int, level: float
) -> Any:
    """:func:`scipy.stats.bootstrap`'s percentile interval of a vectorised ``statistic`` (each
    sample resampled on its last axis, independently of the others)."""
    return stats.bootstrap(
        data,
        statistic,
        n_resamples=N_BOOTSTRAP,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval


def _rms(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.mean(values**2, axis=axis))


def proportion_interval(k: int, m: int, level: float = LEVEL) -> Interval:
    """``k`` successes in ``m`` trials: the share with its exact (Clopper–Pearson) interval
    (:meth:`scipy.stats.binomtest.proportion_ci`), which never covers less than ``level`` — also
    with ``k = 0`` or ``k = m``."""
    if m <= 0:
        return Interval(value=math.nan, low=0.0, high=1.0)
    ci = stats.binomtest(k, m).proportion_ci(confidence_level=level, method="exact")
    return Interval(value=k / m, low=float(ci.low), high=float(ci.high))


def error_metrics(y: np.ndarray, mean: np.ndarray, std: np.ndarray, *, seed: int = 0) -> ErrorMetrics:
    """Accuracy and calibration of predictions ``mean ± std`` against labels ``y`` (audit items)."""
    y, mean, std = (np.asarray(a, dtype=float) for a in (y, mean, std))
    err = np.abs(y - mean)
    n = len(err)
    mae = float(err.mean()) if n else math.nan
    rmse = float(np.sqrt((err**2).mean())) if n else math.nan
    mae_ci = bootstrap_interval(err, np.mean, seed=seed)
    rmse_ci = bootstrap_interval(err, _rms, seed=seed)
    return ErrorMetrics(
        n=n,
        mae=Interval(value=mae, low=mae_ci[0], high=mae_ci[1]),
        rmse=Interval(value=rmse, low=rmse_ci[0], high=rmse_ci[1]),
        coverage_68=proportion_interval(int(inside(err, std, 1.0).sum()), n),
        coverage_95=proportion_interval(int(inside(err, std, Z95).sum()), n),
        spearman=rank_correlation(err, std),
    )


def calibration_curve(
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    levels: Sequence[float] = tuple(np.linspace(0.1, 0.9, 9)),
) -> list[tuple[float, float]]:
    """(nominal, observed) coverage of the central Gaussian intervals μ ± z·σ at each level."""
    err = np.abs(np.asarray(y, dtype=float) - np.asarray(mean, dtype=float))
    std = np.asarray(std, dtype=float)
    if not len(err):
        return []
    return [(float(q), float(inside(err, std, stats.norm.ppf(0.5 + q / 2)).mean())) for q in levels]


class Enrichment(BaseModel):
    """Hits the campaign found vs hits random selection would be expected to find with as many
    calculations, from the audit's hit rate."""

    found: int = Field(description="Hits among the campaign's own calculations.")
    n: int = Field(description="The campaign's own calculations with a label (audit items excluded).")
    audit_hits: int = Field(description="Hits among the audit items.")
    audit_n: int = Field(description="Audit items with a label.")
    hit_rate: Interval = Field(description="Pool hit rate from the audit, Clopper–Pearson interval.")
    expected_random: Interval = Field(description="Hits expected from n random picks: n × hit rate.")
    factor: Interval | None = Field(
        description="Enhancement factor found / (n × hit rate); high = inf when no audit item is a hit "
        "(only a lower bound); None when nothing was found and no audit item is a hit."
    )
    p_random_as_good: float = Field(
        description="Chance that n random picks find at least as many hits (beta-binomial with the "
        "Jeffreys posterior of the hit rate)."
    )
    conclusive: bool = Field(description="Whether the interval of the factor excludes 1.")
    note: str = Field(description="One sentence on what the numbers allow one to say.")


def enrichment(found: int, n: int, audit_hits: int, audit_n: int, level: float = LEVEL) -> Enrichment:
    """Enhancement of the campaign over random selection, with the hit rate's uncertainty propagated.

    The hit rate ``p`` of the pool comes from ``audit_hits`` of ``audit_n`` audit items
    (Clopper–Pearson interval ``[p_lo, p_hi]``); random selection would find ``n·p`` hits in ``n``
    calculations; the factor is ``found / (n·p)`` with the interval ``[found/(n·p_hi), found/(n·p_lo)]``
    (the campaign's own count is what happened, the uncertainty is in ``p``). No audit hit means
    ``p_lo = 0``: the factor has only a lower bound.
    """
    rate = proportion_interval(audit_hits, audit_n, level)
    expected = Interval(value=n * rate.value, low=n * rate.low, high=n * rate.high)
    factor: Interval | None = None
    if audit_hits > 0:
        factor = Interval(value=found / expected.value, low=found / expected.high, high=found / expected.low)
    elif found > 0 and audit_n > 0:
        factor = Interval(value=math.inf, low=found / expected.high, high=math.inf)
    a, b = audit_hits + 0.5, audit_n - audit_hits + 0.5
    p_as_good = float(stats.betabinom.sf(found - 1, n, a, b)) if n > 0 else 1.0
    conclusive = factor is not None and (factor.low > 1 or factor.high < 1)
    if audit_n == 0:
        note = "no audit item labelled yet: no estimate"
    elif factor is None:
        note = f"no hit in the campaign nor in the audit: the hit rate is below {rate.high:.2g} (95 %)"
    elif audit_hits == 0:
        note = (
            f"no audit hit: the pool's hit rate is below {rate.high:.2g} (95 %), so the campaign is at "
            f"least {factor.low:.2g}× better than random (lower bound only)"
        )
    elif factor.low > 1:
        note = f"better than random: the enhancement is at least {factor.low:.2g}× (95 %)"
    elif factor.high < 1:
        note = f"worse than random: the enhancement is at most {factor.high:.2g}× (95 %)"
    else:
        note = (
            f"inconclusive: the interval [{factor.low:.2g}, {factor.high:.2g}] contains 1 — "
            "more audit items (or hits) are needed"
        )
    return Enrichment(
        found=found,
        n=n,
        audit_hits=audit_hits,
        audit_n=audit_n,
        hit_rate=rate,
        expected_random=expected,
        factor=factor,
        p_random_as_good=p_as_good,
        conclusive=conclusive,
        note=note,
    )


class BestVsRandom(BaseModel):
    """The campaign's best value against random selection, for minimize/maximize goals."""

    best: float = Field(description="Best value among the campaign's own calculations.")
    n: int = Field(description="The campaign's own calculations with a label.")
    audit_n: int = Field(description="Audit items with a label.")
    audit_as_good: int = Field(description="Audit items at least as good as the campaign's best.")
    share_as_good: Interval = Field(description="Share of the pool at least as good, Clopper–Pearson.")
    p_random_as_good: Interval = Field(
        description="Chance that n random picks include one at least as good: 1 − (1 − share)^n."
    )
    note: str = Field(description="One sentence on what the numbers allow one to say.")


def best_vs_random(
    best: float, audit_values: np.ndarray, n: int, *, minimize: bool, level: float = LEVEL
) -> BestVsRandom:
    """How rare the campaign's best value is in the pool (from the audit), and the chance that ``n``
    random picks would have reached it."""
    values = np.asarray(audit_values, dtype=float)
    k = int((values <= best).sum() if minimize else (values >= best).sum())
    share = proportion_interval(k, len(values), level)

    def chance(p: float) -> float:
        return 1.0 - (1.0 - p) ** n if not math.isnan(p) else math.nan

    p_rand = Interval(value=chance(share.value), low=chance(share.low), high=chance(share.high))
    if not len(values):
        note = "no audit item labelled yet: no estimate"
    elif p_rand.high < 0.5:
        note = f"random selection with {n} picks would reach this value with probability ≤ {p_rand.high:.2g}"
    else:
        note = (
            f"not distinguishable from random: {n} random picks could reach this value "
            f"(probability up to {p_rand.high:.2g}); the audit cannot resolve values this rare "
            f"with {len(values)} items"
        )
    return BestVsRandom(
        best=float(best),
        n=n,
        audit_n=len(values),
        audit_as_good=k,
        share_as_good=share,
        p_random_as_good=p_rand,
        note=note,
    )


class Informativeness(BaseModel):
    """For learning goals: the error of the items the campaign picked (predicted by the model that
    picked them) against the error random picks would have had under the same models."""

    picks: int = Field(description="Picked items with a label and a prediction made when picked.")
    picks_mae: float = Field(description="Mean |error| of the picks under the model that picked them.")
    random_mae: Interval = Field(description="Mean |error| random picks would have had (audit, bootstrap).")
    ratio: Interval = Field(description="picks_mae / random_mae, joint bootstrap over picks and audit items.")
    note: str = Field(description="One sentence on what the numbers allow one to say.")


def informativeness(
    pick_errors: Sequence[np.ndarray], audit_errors: Sequence[np.ndarray], *, seed: int = 0
) -> Informativeness:
    """Round by round, the picks' absolute errors under the model that chose them and the audit
    items' absolute errors under the same model (``audit_errors[r][k]``: audit item ``k``). Random
    picks would have had the audit's mean error of each round, weighted by the round's picks; the
    interval resamples the audit items (the same resample in every round) and the picks of each round."""
    picks = [np.asarray(p, dtype=float) for p in pick_errors]
    audit = [np.asarray(a, dtype=float) for a in audit_errors]
    counts = np.array([len(p) for p in picks])
    if not counts.sum() or not audit or not len(audit[0]):
        nan = Interval(value=math.nan, low=math.nan, high=math.nan)
        return Informativeness(picks=0, picks_mae=math.nan, random_mae=nan, ratio=nan, note="no estimate yet")
    weights = counts / counts.sum()
    by_round = np.stack(audit)  # [round, audit item]

    def estimate(items: np.ndarray, *picked: np.ndarray, axis: int = -1) -> np.ndarray:
        """(picks' MAE ÷ random's, random's MAE) for the audit ``items`` (indices, the same in
        every round): the picks pooled over rounds, the audit's mean error of each round weighted
        by the round's picks."""
        found = sum(w * p.mean(axis=axis) for w, p in zip(weights, picked, strict=True))
        rand = np.tensordot(weights, by_round[:, items.astype(int)].mean(axis=-1), axes=1)
        ratio = np.divide(found, rand, out=np.full(np.shape(rand), math.inf), where=rand > 0)
        return np.stack([ratio, rand])

    items = np.arange(by_round.shape[1], dtype=float)
    (ratio_value, rand), found = estimate(items, *picks), float(np.concatenate(picks).mean())
    # scipy resamples samples of two or more: one value doubled has the same resamples (itself)
    samples = tuple(np.repeat(a, 2) if len(a) == 1 else a for a in (items, *picks))
    ci = _bootstrap(samples, estimate, seed=seed, level=LEVEL)
    ratio = Interval(value=float(ratio_value), low=float(ci.low[0]), high=float(ci.high[0]))
    if ratio.low > 1:
        note = f"the picks carried at least {ratio.low:.2g}× the error of random picks (95 %): informative"
    elif ratio.high < 1:
        note = f"the picks carried less error than random picks (at most {ratio.high:.2g}×, 95 %)"
    else:
        note = f"inconclusive: the interval [{ratio.low:.2g}, {ratio.high:.2g}] contains 1"
    return Informativeness(
        picks=int(counts.sum()),
        picks_mae=found,
        random_mae=Interval(value=float(rand), low=float(ci.low[1]), high=float(ci.high[1])),
        ratio=ratio,
        note=note,
    )
