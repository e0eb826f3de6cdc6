"""The audit statistics: sizes, schedule, draw, intervals, enrichment — against known answers and
against simulated truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matloop.audit_stats import (
    audit_schedule,
    audit_size,
    best_vs_random,
    calibration_curve,
    draw_audit,
    enrichment,
    error_metrics,
    informativeness,
    proportion_interval,
)


def test_size_takes_the_larger_of_share_and_minimum_and_leaves_the_campaign_the_larger_part():
    assert audit_size(50, 240, fraction=0.15, min_items=8) == 8
    assert audit_size(200, 1000, fraction=0.15, min_items=8) == 30
    assert audit_size(10, 240, fraction=0.15, min_items=8) == 5  # at most half the budget
    assert audit_size(100, 6, fraction=0.15, min_items=8) == 3  # at most half the pool


def test_schedule_spreads_items_over_rounds_with_early_rounds_first():
    assert audit_schedule(8, 4) == [2, 2, 2, 1, 1]
    assert audit_schedule(3, 4) == [1, 1, 1, 0, 0]
    assert sum(audit_schedule(17, 6)) == 17


def test_draw_is_reproducible_unique_and_seed_dependent():
    pool = [f"item-{k}" for k in range(500)]
    a, b = draw_audit(pool, 40, seed=3), draw_audit(pool, 40, seed=3)
    assert a == b and len(set(a)) == 40 and set(a) <= set(pool)
    assert draw_audit(pool, 40, seed=4) != a
    with pytest.raises(ValueError, match="at most 500"):
        draw_audit(pool, 501, seed=0)


def test_draw_is_uniform_over_the_pool():
    pool = [str(k) for k in range(20)]
    counts = np.zeros(20)
    for seed in range(2000):
        for item in draw_audit(pool, 5, seed):
            counts[int(item)] += 1
    expected = 2000 * 5 / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8  # 99.9 % quantile of χ² with 19 degrees of freedom


def test_clopper_pearson_matches_known_values_and_handles_the_edges():
    ci = proportion_interval(0, 10)
    assert ci.low == 0 and ci.high == pytest.approx(0.3085, abs=1e-4)
    ci = proportion_interval(5, 10)
    assert (ci.low, ci.high) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert proportion_interval(10, 10).high == 1 and proportion_interval(10, 10).low == pytest.approx(
        0.6915, abs=1e-4
    )


def test_error_metrics_on_known_errors():
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    mean = y + np.array([0.1, -0.2, 0.3, -0.4, 0.5])
    std = np.array([0.2, 0.1, 0.5, 0.1, 1.0])
    m = error_metrics(y, mean, std)
    assert m.n == 5
    assert m.mae.value == pytest.approx(0.3)
    assert m.rmse.value == pytest.approx(math.sqrt(np.mean([0.01, 0.04, 0.09, 0.16, 0.25])))
    assert m.mae.low <= 0.3 <= m.mae.high and m.mae.low >= 0.1 and m.mae.high <= 0.5
    assert m.coverage_68.value == pytest.approx(3 / 5)  # |err| ≤ σ for 0.1, 0.3, 0.5
    assert m.coverage_95.value == pytest.approx(3 / 5)  # 0.2 ≤ 1.96·0.1 fails, 0.4 too
    assert m.spearman is not None and -1 <= m.spearman <= 1


def test_calibration_curve_of_honest_sigma_lies_on_the_diagonal():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.1, 1.0, 20000)
    y = rng.normal(0, std)
    for nominal, observed in calibration_curve(y, np.zeros_like(y), std):
        assert observed == pytest.approx(nominal, abs=0.015)


def test_enrichment_propagates_the_hit_rate_interval():
    e = enrichment(found=12, n=40, audit_hits=2, audit_n=20)
    rate = proportion_interval(2, 20)
    assert e.expected_random.value == pytest.approx(4.0)
    assert e.factor is not None and e.factor.value == pytest.approx(3.0)
    assert e.factor.low == pytest.approx(12 / (40 * rate.high))
    assert e.factor.high == pytest.approx(12 / (40 * rate.low))
    assert 0 < e.p_random_as_good < 0.05


def test_no_audit_hit_gives_only_a_lower_bound():
    e = enrichment(found=6, n=30, audit_hits=0, audit_n=10)
    assert e.factor is not None and math.isinf(e.factor.high) and e.factor.low > 0
    assert "lower bound" in e.note and e.conclusive == (e.factor.low > 1)
    nothing = enrichment(found=0, n=30, audit_hits=0, audit_n=10)
    assert nothing.factor is None and "below" in nothing.note


def test_inconclusive_when_the_interval_contains_one():
    e = enrichment(found=3, n=30, audit_hits=1, audit_n=10)
    assert e.factor is not None and e.factor.low < 1 < e.factor.high
    assert not e.conclusive and "inconclusive" in e.note


def test_hit_rate_interval_covers_the_true_rate_in_simulated_audits():
    """Audits of 20 items from a pool with hit rate 0.12: the 95 % interval holds the true rate in at
    least 93 % of them (Clopper–Pearson is conservative)."""
    rng = np.random.default_rng(1)
    p, covered, trials = 0.12, 0, 400
    for _ in range(trials):
        audit_hits = int(rng.binomial(20, p))
        e = enrichment(int(rng.binomial(60, p)), 60, audit_hits, 20)
        rate = e.hit_rate
        covered += rate.low <= p <= rate.high
    assert covered / trials >= 0.93


def test_best_vs_random_counts_the_audit_items_at_least_as_good():
    audit = np.array([-1.0, -2.0, -0.5, -3.0, 0.0])
    b = best_vs_random(-2.5, audit, n=20, minimize=True)
    assert b.audit_as_good == 1 and b.share_as_good.value == pytest.approx(0.2)
    assert b.p_random_as_good.value == pytest.approx(1 - 0.8**20)
    top = best_vs_random(-3.5, audit, n=5, minimize=True)
    assert top.audit_as_good == 0 and top.p_random_as_good.low == 0
    assert best_vs_random(-0.2, audit, n=5, minimize=False).audit_as_good == 1


def test_informativeness_weights_rounds_by_their_picks_and_finds_high_error_picks():
    audit = [np.full(10, 0.2), np.full(10, 0.4)]
    picks = [np.array([1.0, 1.0, 1.0]), np.array([0.4])]
    info = informativeness(picks, audit)
    assert info.picks == 4 and info.picks_mae == pytest.approx(3.4 / 4)
    assert info.random_mae.value == pytest.approx(0.75 * 0.2 + 0.25 * 0.4)
    assert info.ratio.value == pytest.approx((3.4 / 4) / 0.25)
    assert info.ratio.low > 1 and "informative" in info.note
    rng = np.random.default_rng(0)
    same = informativeness([rng.exponential(0.3, 8)], [rng.exponential(0.3, 30)])
    assert same.ratio.low < same.ratio.value < same.ratio.high
