from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from matloop.acquisition import (
    STRATEGIES,
    acquisition_scores,
    expected_improvement,
    gaussian_entropy,
    probability_in_window,
    select,
)
from matloop.errors import ToolInputError


def _pool(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.uniform(0.1, 1.0, size=n), rng.normal(size=(n, 8))


def test_entropy_is_gaussian_entropy_and_ranks_high_sigma_first():
    assert gaussian_entropy(np.array([1.0]))[0] == pytest.approx(0.5 * np.log(2 * np.pi * np.e))
    h = gaussian_entropy(np.array([1.0, 2.0]))
    assert h[1] - h[0] == pytest.approx(np.log(2))
    picked = select("entropy", 1, mean=[0.0, 0.0, 5.0], std=[0.1, 0.9, 0.2])
    assert picked.indices.tolist() == [1]
    assert "nats" in picked.reasons[0]
    order = select("entropy", 3, mean=np.zeros(3), std=[0.5, 0.1, 0.9]).indices
    assert order.tolist() == [2, 0, 1]


def test_in_window_probability_matches_normal_cdf():
    p = probability_in_window(np.array([2.0, 0.0]), np.array([0.5, 1.0]), 1.5, 3.0)
    assert p[0] == pytest.approx(norm.cdf(2.0) - norm.cdf(-1.0))
    assert p[1] == pytest.approx(norm.cdf(3.0) - norm.cdf(1.5))
    assert probability_in_window(np.array([0.0]), np.array([1.0]), 0.0, np.inf)[0] == pytest.approx(0.5)
    # A confident prediction inside the window beats an uncertain one centred on it.
    picked = select("in_window", 1, mean=[2.2, 2.2, 10.0], std=[0.1, 3.0, 0.1], window=(1.5, 3.0))
    assert picked.indices.tolist() == [0]


def test_expected_improvement_and_ucb_respect_goal():
    ei_min = expected_improvement(np.array([0.0, 1.0]), np.array([0.1, 0.1]), best=0.5, goal="minimize")
    ei_max = expected_improvement(np.array([0.0, 1.0]), np.array([0.1, 0.1]), best=0.5, goal="maximize")
    assert ei_min[0] > ei_min[1] and ei_max[1] > ei_max[0]
    # With σ → 0 EI is the plain improvement.
    assert expected_improvement(np.array([0.2]), np.array([1e-9]), 0.5, "minimize")[0] == pytest.approx(0.3)
    mean, std = np.array([0.0, 1.0, 0.5]), np.array([0.1, 0.1, 1.0])
    assert select("ucb", 1, mean, std, goal="maximize", kappa=0.0).indices[0] == 1
    assert select("ucb", 1, mean, std, goal="minimize", kappa=0.0).indices[0] == 0
    assert select("ucb", 1, mean, std, goal="maximize", kappa=5.0).indices[0] == 2
    assert select("greedy", 2, mean, std, goal="maximize", kappa=5.0).indices.tolist() == [1, 2]
    assert select("greedy", 2, mean, std, goal="minimize").indices.tolist() == [0, 2]
    assert select("ei", 1, mean, std, goal="minimize", best=0.05).indices[0] == 2


def test_every_strategy_returns_distinct_items_deterministically():
    mean, std, emb = _pool()
    for strategy in STRATEGIES:
        kw = dict(goal="maximize", best=1.0, window=(0.0, 1.0), epistemic_std=0.5 * std)
        a = select(strategy, 20, mean, std, emb, seed=3, **kw)
        b = select(strategy, 20, mean, std, emb, seed=3, **kw)
        assert len(set(a.indices.tolist())) == 20, strategy
        assert a.indices.tolist() == b.indices.tolist(), strategy
        assert len(a.reasons) == 20 and all("μ=" in r for r in a.reasons)
    assert (
        select("random", 20, mean, std, seed=1).indices.tolist()
        != select("random", 20, mean, std, seed=2).indices.tolist()
    )


def _clustered_pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ten tight clusters; the one with the largest σ holds 50 near-identical items."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(10, 4))
    sizes = [50] + [20] * 9
    emb = np.concatenate([c + 0.01 * rng.normal(size=(k, 4)) for c, k in zip(centres, sizes, strict=True)])
    std = np.concatenate([np.full(50, 1.0)] + [np.full(20, 0.5 + 0.02 * j) for j in range(9)])
    std = std + 1e-3 * rng.random(len(std))
    return np.zeros(len(std)), std, emb


def test_batch_entropy_spreads_over_clusters_where_top_n_entropy_does_not():
    mean, std, emb = _clustered_pool()
    cluster = np.repeat(np.arange(10), [50] + [20] * 9)
    top = select("entropy", 10, mean, std, emb).indices
    batch = select("batch_entropy", 10, mean, std, emb).indices
    assert len(set(cluster[top])) == 1
    assert len(set(cluster[batch])) == 10
    assert len(set(batch.tolist())) == 10

    def mean_pairwise(idx):
        d = np.linalg.norm(emb[idx][:, None] - emb[idx][None], axis=-1)
        return d[np.triu_indices(len(idx), 1)].mean()

    assert mean_pairwise(batch) > 10 * mean_pairwise(top)
    # Exact duplicates (identical embeddings) are never both picked while other items remain.
    dup_emb = np.repeat(emb[:5], 2, axis=0)
    dup = select("batch_entropy", 5, np.zeros(10), np.ones(10), dup_emb).indices
    assert len(set((dup // 2).tolist())) == 5


def test_batch_entropy_avoids_labelled_neighbourhood():
    mean, std, emb = _clustered_pool()
    labelled = emb[:3]  # the high-σ cluster is already covered by labels
    picked = select("batch_entropy", 1, mean, std, emb, labelled_embedding=labelled).indices
    assert picked[0] >= 50


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(strategy="entropy", n=0), "n ≥ 1"),
        (dict(strategy="entropy", n=-2), "n ≥ 1"),
        (dict(strategy="entropy", n=11), "n ≤ the pool size 10"),
        (dict(strategy="best_guess", n=1), "valid values are"),
        (dict(strategy="in_window", n=1), "window"),
        (dict(strategy="in_window", n=1, window=(3.0, 1.0)), "lo < hi"),
        (dict(strategy="in_window", n=1, window=(1.0,)), "two numbers"),
        (dict(strategy="in_window", n=1, window=(float("nan"), 1.0)), "lo < hi"),
        (dict(strategy="ucb", n=1), "goal"),
        (dict(strategy="greedy", n=1), "goal"),
        (dict(strategy="ei", n=1, goal="up"), "valid values are"),
        (dict(strategy="ei", n=1, goal="minimize"), "best observed"),
    ],
)
def test_bad_arguments_are_rejected_with_clear_messages(kwargs, message):
    mean, std, emb = _pool(10)
    with pytest.raises(ToolInputError, match=message):
        select(kwargs.pop("strategy"), kwargs.pop("n"), mean, std, emb, **kwargs)


def test_empty_pool_and_unknown_strategy_messages():
    with pytest.raises(ToolInputError, match="non-empty candidate pool"):
        select("entropy", 1, np.zeros(0), np.zeros(0))
    with pytest.raises(ToolInputError, match=r"valid values are \['bald', 'batch_entropy', 'ei'"):
        acquisition_scores("maxvar", np.zeros(2), np.ones(2))


def test_bald_prefers_what_the_model_does_not_know_over_noise():
    """Half the pool is noisy (large σ, nearly all aleatoric), half is unexplored (smaller σ,
    mostly epistemic): entropy chases the noise, BALD the unexplored items."""
    mean, _, emb = _pool(20)
    std = np.r_[np.full(10, 2.0), np.full(10, 1.0)]
    epistemic = np.r_[np.full(10, 0.1), np.full(10, 0.9)]
    noisy = set(range(10))
    assert set(select("entropy", 5, mean, std, emb, epistemic_std=epistemic).indices) <= noisy
    assert not set(select("bald", 5, mean, std, emb, epistemic_std=epistemic).indices) & noisy
    with pytest.raises(ToolInputError, match="epistemic"):
        select("bald", 5, mean, std, emb)


def test_batch_entropy_scales_to_large_pool_without_quadratic_memory():
    rng = np.random.default_rng(0)
    n = 20_000
    picked = select("batch_entropy", 50, rng.normal(size=n), rng.uniform(0.1, 1, n), rng.normal(size=(n, 16)))
    assert len(set(picked.indices.tolist())) == 50
