"""Acquisition functions: score a pool from predicted mean/σ (and embeddings) and pick a batch.

Pure, vectorised numpy; no workspace. The ``select_candidates`` tool and the active-learning
simulation both call :func:`select`.

Strategies (``STRATEGIES``):

- ``entropy``: Gaussian predictive entropy H = ½·ln(2πeσ²) (for an ensemble, σ is the
  mixture's total σ as returned by ``UQModel.predict``), top-n.
- ``batch_entropy``: batch-aware entropy (see :func:`batch_entropy_select`): greedy picks of
  exp(H)·density^β·(1 − exp(−d²/ℓ²)), with d the distance in the (standardised) GNN embedding
  space to the nearest item already labelled or picked, so a batch is not n near-duplicates
  and isolated outliers do not dominate.
- ``bald``: the information a label gives about the model, I = ½·ln(σ²/σ²_aleatoric) with
  σ²_aleatoric = σ² − σ²_epistemic (BALD for a Gaussian predictive; Houlsby et al. 2011), with
  the batch diversity of ``batch_entropy``: unlike entropy, it does not chase noisy items whose
  σ is mostly aleatoric.
- ``random``: uniform, seeded.
- ``max_std``: largest epistemic σ (model uncertainty alone: the spread of ensemble members or
  dropout passes) when ``epistemic_std`` is given, else the total σ (then it ranks exactly as
  ``entropy``).
- ``ucb``: μ + κσ (maximize) or −μ + κσ (minimize).
- ``greedy``: the best predicted mean (pure exploitation: ``ucb`` with κ = 0).
- ``ei``: expected improvement over the best observed value, for minimize or maximize.
- ``in_window``: P(lo < y < hi) under N(μ, σ²).

Ties are broken by a seeded random permutation, so a selection is deterministic per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from matloop.errors import ToolInputError, invalid_choice
from matloop.names import DIRECTIONS, STRATEGIES, Direction

#: Strategies that pick a batch greedily away from labelled and already-picked items.
BATCH_AWARE = ("batch_entropy", "bald")
_TINY = 1e-12
_CHUNK = 2048  # rows per block in distance computations: memory O(_CHUNK · m), never O(N²)
_ANCHORS = 1000  # pool points the density estimate compares against


@dataclass(frozen=True)
class Acquired:
    """A selection: pool positions in pick order, their scores and one-line reasons."""

    indices: np.ndarray
    scores: np.ndarray
    reasons: list[str]


@dataclass(frozen=True)
class _Context:
    mean: np.ndarray
    std: np.ndarray
    epistemic_std: np.ndarray | None
    goal: Direction | None
    best: float | None
    window: tuple[float, float] | None
    kappa: float
    unit: str


def gaussian_entropy(std: np.ndarray) -> np.ndarray:
    """Differential entropy ½·ln(2πeσ²) of N(μ, σ²), in nats (σ floored at 1e-12)."""
    std = np.maximum(np.asarray(std, dtype=np.float64), _TINY)
    return 0.5 * np.log(2.0 * np.pi * np.e) + np.log(std)


def probability_in_window(mean: np.ndarray, std: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """P(lo < y < hi) for y ~ N(mean, std²); ``lo``/``hi`` may be ±inf for one-sided windows."""
    std = np.maximum(np.asarray(std, dtype=np.float64), _TINY)
    mean = np.asarray(mean, dtype=np.float64)
    return np.clip(ndtr((hi - mean) / std) - ndtr((lo - mean) / std), 0.0, 1.0)


def expected_improvement(
    mean: np.ndarray, std: np.ndarray, best: float, goal: Direction, xi: float = 0.0
) -> np.ndarray:
    """E[max(0, improvement over ``best``)] under N(mean, std²); improvement is y − best
    for ``maximize`` and best − y for ``minimize`` (minus a margin ``xi``)."""
    std = np.maximum(np.asarray(std, dtype=np.float64), _TINY)
    mean = np.asarray(mean, dtype=np.float64)
    gain = (mean - best - xi) if goal == "maximize" else (best - mean - xi)
    z = gain / std
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)
    return np.maximum(gain * ndtr(z) + std * pdf, 0.0)


def upper_confidence_bound(
    mean: np.ndarray, std: np.ndarray, goal: Direction, kappa: float = 2.0
) -> np.ndarray:
    """Optimistic score μ + κσ (maximize) or −μ + κσ (minimize); higher is better."""
    sign = 1.0 if goal == "maximize" else -1.0
    return sign * np.asarray(mean, dtype=np.float64) + kappa * np.asarray(std, dtype=np.float64)


# --- per-item scores ----------------------------------------------------------------------------


def _need_goal(ctx: _Context, strategy: str) -> Direction:
    if ctx.goal not in DIRECTIONS:
        raise invalid_choice(f"a goal for strategy {strategy!r}", ctx.goal, DIRECTIONS)
    return ctx.goal


def _score_entropy(ctx: _Context) -> np.ndarray:
    return gaussian_entropy(ctx.std)


def _score_bald(ctx: _Context) -> np.ndarray:
    if ctx.epistemic_std is None:
        raise ToolInputError("expected the epistemic σ for strategy 'bald', got none")
    total = np.maximum(ctx.std, _TINY) ** 2
    aleatoric = np.maximum(total - np.minimum(ctx.epistemic_std**2, total), _TINY * total)
    return 0.5 * np.log(total / aleatoric)


def _score_max_std(ctx: _Context) -> np.ndarray:
    return ctx.std if ctx.epistemic_std is None else ctx.epistemic_std


def _score_ucb(ctx: _Context) -> np.ndarray:
    return upper_confidence_bound(ctx.mean, ctx.std, _need_goal(ctx, "ucb"), ctx.kappa)


def _score_greedy(ctx: _Context) -> np.ndarray:
    return upper_confidence_bound(ctx.mean, ctx.std, _need_goal(ctx, "greedy"), 0.0)


def _score_ei(ctx: _Context) -> np.ndarray:
    goal = _need_goal(ctx, "ei")
    if ctx.best is None or not np.isfinite(ctx.best):
        raise ToolInputError(f"expected a finite best observed value for strategy 'ei', got {ctx.best!r}")
    return expected_improvement(ctx.mean, ctx.std, ctx.best, goal)


def _score_in_window(ctx: _Context) -> np.ndarray:
    lo, hi = check_window(ctx.window)
    return probability_in_window(ctx.mean, ctx.std, lo, hi)


def _score_random(ctx: _Context) -> np.ndarray:
    return np.zeros_like(ctx.mean)


_SCORERS: dict[str, Callable[[_Context], np.ndarray]] = {
    "entropy": _score_entropy,
    "batch_entropy": _score_entropy,
    "bald": _score_bald,
    "random": _score_random,
    "max_std": _score_max_std,
    "ucb": _score_ucb,
    "greedy": _score_greedy,
    "ei": _score_ei,
    "in_window": _score_in_window,
}


def check_strategy(strategy: str) -> str:
    """The strategy name, or a :class:`ToolInputError` listing the valid ones."""
    if strategy not in _SCORERS:
        raise invalid_choice("an acquisition strategy", strategy, STRATEGIES)
    return strategy


def check_window(window: tuple[float, float] | list[float] | None) -> tuple[float, float]:
    """``(lo, hi)`` with lo < hi (either may be ±inf, not both), else :class:`ToolInputError`."""
    if window is None:
        raise ToolInputError("expected a window (lo, hi) for strategy 'in_window', got None")
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ToolInputError(f"expected a window of two numbers (lo, hi), got {window!r}") from None
    if np.isnan(lo) or np.isnan(hi) or not lo < hi or (np.isinf(lo) and np.isinf(hi)):
        raise ToolInputError(f"expected a window (lo, hi) with lo < hi, got {window!r}")
    return lo, hi


def acquisition_scores(
    strategy: str,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    epistemic_std: np.ndarray | None = None,
    goal: Direction | None = None,
    best: float | None = None,
    window: tuple[float, float] | None = None,
    kappa: float = 2.0,
) -> np.ndarray:
    """Per-item score of ``strategy`` (higher = more wanted); ``batch_entropy`` gives the entropy."""
    ctx = _context(mean, std, epistemic_std, goal, best, window, kappa, "")
    return _SCORERS[check_strategy(strategy)](ctx)


# --- selection ----------------------------------------------------------------------------------


def select(
    strategy: str,
    n: int,
    mean: np.ndarray,
    std: np.ndarray,
    embedding: np.ndarray | None = None,
    *,
    epistemic_std: np.ndarray | None = None,
    goal: Direction | None = None,
    best: float | None = None,
    window: tuple[float, float] | None = None,
    kappa: float = 2.0,
    labelled_embedding: np.ndarray | None = None,
    density_weight: float = 1.0,
    seed: int = 0,
    unit: str = "",
) -> Acquired:
    """Pick ``n`` distinct pool items by ``strategy``.

    Args:
        strategy: one of ``STRATEGIES``.
        n: batch size, 1 ≤ n ≤ pool size.
        mean, std: predicted mean and σ per pool item, shape [N].
        embedding: [N, D] model embeddings (required by ``batch_entropy``).
        epistemic_std: optional model-only σ; ``max_std`` ranks by it when given.
        goal: ``minimize`` or ``maximize`` (``ucb``, ``ei``).
        best: best observed value (``ei``).
        window: (lo, hi) target range (``in_window``).
        kappa: exploration weight of ``ucb``.
        labelled_embedding: [L, D] embeddings of already-labelled items (``batch_entropy``
            then also avoids their neighbourhood).
        density_weight: exponent β of the density term of ``batch_entropy`` (0 = off).
        seed: seeds random picks and tie-breaking.
        unit: unit of the target, only used in the reasons.
    """
    check_strategy(strategy)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    pool = len(mean)
    if pool == 0:
        raise ToolInputError("expected a non-empty candidate pool, got 0 items (all excluded or none given)")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise ToolInputError(f"expected n ≥ 1 candidates to select, got {n!r}")
    if n > pool:
        raise ToolInputError(f"expected n ≤ the pool size {pool}, got n={n}")
    ctx = _context(mean, std, epistemic_std, goal, best, window, kappa, unit)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        idx = rng.permutation(pool)[:n]
        return Acquired(idx, np.zeros(n), [f"random pick (seed {seed}); {_describe(ctx, i)}" for i in idx])
    scores = _SCORERS[strategy](ctx)
    if strategy in BATCH_AWARE:
        if embedding is None:
            raise ValueError(f"{strategy} needs the pool embeddings")
        idx, notes = batch_entropy_select(
            scores, embedding, n, labelled=labelled_embedding, density_weight=density_weight, rng=rng
        )
    else:
        idx, notes = _top_n(scores, n, rng), [""] * n
    label = {"batch_entropy": "entropy"}.get(strategy, strategy)
    reasons = [
        f"{label} {scores[i]:.4g}{_score_unit(strategy)}{note}; {_describe(ctx, i)}"
        for i, note in zip(idx, notes, strict=True)
    ]
    return Acquired(idx, scores[idx], reasons)


def _top_n(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the n largest scores; ties broken by a seeded permutation."""
    perm = rng.permutation(len(scores))
    return perm[np.argsort(-scores[perm], kind="stable")[:n]]


def batch_entropy_select(
    entropy: np.ndarray,
    embedding: np.ndarray,
    n: int,
    *,
    labelled: np.ndarray | None = None,
    density_weight: float = 1.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Greedy batch-aware entropy selection in embedding space.

    Embeddings are standardised per column; ℓ is the median pairwise distance between up to
    1000 seeded anchor points of the pool. Each item gets a weight
    w = exp(H) · ρ^β (exp(H) ∝ σ; ρ = mean kernel similarity exp(−d²/ℓ²) to the anchors, an
    information-density term that down-weights isolated outliers, β = ``density_weight``).
    Then n greedy picks of argmax w · (1 − exp(−d²/ℓ²)), where d is the distance to the nearest
    labelled or already-picked item, updated after every pick (running minimum, O(N·D) per
    pick; distance blocks of ``_CHUNK`` rows, so memory stays O(N + chunk·anchors)).
    Returns the picks and a note per pick (density and distance to the batch).
    """
    rng = rng or np.random.default_rng(0)
    emb = np.asarray(embedding, dtype=np.float64)
    if emb.ndim != 2 or len(emb) != len(entropy):
        raise ValueError(f"embedding must be [N={len(entropy)}, D], got shape {emb.shape}")
    pool = len(emb)
    mu, sd = emb.mean(axis=0), emb.std(axis=0)
    sd[sd < _TINY] = 1.0
    emb = (emb - mu) / sd
    anchors = emb[rng.choice(pool, size=min(pool, _ANCHORS), replace=False)]
    scale = _median_distance(anchors)
    log_w = np.asarray(entropy, dtype=np.float64) - np.max(entropy)
    density = np.ones(pool)
    if density_weight:
        density = np.concatenate(
            [np.exp(-_sq_dist(emb[s : s + _CHUNK], anchors) / scale**2).mean(axis=1) for s in _chunks(pool)]
        )
        log_w = log_w + density_weight * np.log(np.maximum(density, _TINY))
    weight = np.exp(log_w)
    min_sq = np.full(pool, np.inf)
    if labelled is not None and len(labelled):
        lab = (np.asarray(labelled, dtype=np.float64) - mu) / sd
        for s in _chunks(pool):
            for t in range(0, len(lab), _CHUNK):
                block = _sq_dist(emb[s : s + _CHUNK], lab[t : t + _CHUNK]).min(axis=1)
                min_sq[s : s + _CHUNK] = np.minimum(min_sq[s : s + _CHUNK], block)
    # Seeded jitter below float resolution of the weights breaks exact ties reproducibly.
    jitter = 1.0 + 1e-9 * rng.random(pool)
    picked: list[int] = []
    notes: list[str] = []
    available = np.ones(pool, dtype=bool)
    for _ in range(n):
        gain = weight * -np.expm1(-min_sq / scale**2) * jitter
        gain[~available] = -np.inf
        i = int(np.argmax(gain))
        dist = np.sqrt(min_sq[i]) / scale
        notes.append(f", density {density[i]:.2f}, distance to batch/labelled {dist:.2f}ℓ")
        picked.append(i)
        available[i] = False
        min_sq = np.minimum(min_sq, ((emb - emb[i]) ** 2).sum(axis=1))
    return np.asarray(picked, dtype=np.int64), notes


def _chunks(n: int) -> range:
    return range(0, n, _CHUNK)


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances [len(a), len(b)] (clipped at 0)."""
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _median_distance(points: np.ndarray) -> float:
    d = np.sqrt(_sq_dist(points, points)[np.triu_indices(len(points), k=1)])
    d = d[d > 0]
    return float(np.median(d)) if len(d) else 1.0


def _context(mean, std, epistemic_std, goal, best, window, kappa, unit) -> _Context:
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if std.shape != mean.shape:
        raise ValueError(f"mean and std must have the same shape, got {mean.shape} and {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))) or np.any(std < 0):
        raise ValueError("predicted mean/std must be finite and std ≥ 0")
    if epistemic_std is not None:
        epistemic_std = np.asarray(epistemic_std, dtype=np.float64).reshape(-1)
    if goal is not None and goal not in DIRECTIONS:
        raise invalid_choice("a goal", goal, DIRECTIONS)
    return _Context(mean, std, epistemic_std, goal, best, window, kappa, unit)


def _score_unit(strategy: str) -> str:
    units = {"entropy": " nats", "batch_entropy": " nats", "bald": " nats", "in_window": " probability"}
    return units.get(strategy, "")


def _describe(ctx: _Context, i: int) -> str:
    unit = f" {ctx.unit}" if ctx.unit else ""
    return f"μ={ctx.mean[i]:.4g}{unit}, σ={ctx.std[i]:.3g}{unit}"
