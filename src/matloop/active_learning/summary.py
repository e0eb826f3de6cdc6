"""Headline figures of an active-learning simulation: curves over seeds, labels to reach random's
final test MAE (with a bootstrap interval), area under the learning curve, and for discovery
tasks hits, recall, enhancement and acceleration factors; plus the learning-curve plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def labels_to_reach(labels: np.ndarray, mae: np.ndarray, level: float) -> float | None:
    """First label count at which the curve reaches ``level`` (linear interpolation), or None."""
    below = np.flatnonzero(mae <= level)
    if not len(below):
        return None
    k = int(below[0])
    if k == 0:
        return float(labels[0])
    x0, x1, m0, m1 = labels[k - 1], labels[k], mae[k - 1], mae[k]
    return float(x0 + (m0 - level) / (m0 - m1) * (x1 - x0))


def _curve(rows: list[list[dict[str, Any]]], split: str, key: str) -> np.ndarray | None:
    """``rows[seed][round][split][key]`` as a (seeds × rounds) array, or None where missing."""
    if any(r[split] is None or key not in r[split] for run in rows for r in run):
        return None
    return np.asarray([[r[split][key] for r in run] for run in rows], dtype=float)


def summarise(
    records: dict[str, dict[int, list[dict[str, Any]]]],
    *,
    hits_total: int | None = None,
    pool_size: int | None = None,
    bootstrap: int = 2000,
) -> dict[str, Any]:
    """Curves (mean ± std over seeds) and headline figures per strategy.

    Learning (a test split): ``labels_to_reach_random_final`` is where the seed-averaged test-MAE
    curve first reaches random's final mean MAE, ``ratio_to_random`` divides it by random's own
    (< 1: fewer labels than random) with a 90 % bootstrap interval over seeds
    (``ratio_ci90``; None bounds: not reached in that share of resamples); ``aulc`` is the
    trapezoid area under the mean MAE curve over the label range. The same on the
    not-yet-labelled pool is reported as ``transductive``.

    Discovery (``hits_total`` items in the target set): hits at budget, recall, enhancement
    factor over random's hits, and acceleration factor: labels uniform random sampling needs in
    expectation for the strategy's hit count (negative hypergeometric mean h·(N+1)/(K+1)) over
    the labels the strategy needed.
    """
    curves: dict[str, Any] = {}
    for strategy, by_seed in records.items():
        rows = [by_seed[s] for s in sorted(by_seed)]
        length = min(len(r) for r in rows)
        rows = [r[:length] for r in rows]
        labels = np.asarray([r["n_labels"] for r in rows[0]], dtype=float)
        curve: dict[str, Any] = {"labels": labels.tolist(), "seeds": sorted(by_seed)}
        for split in ("test", "transductive"):
            mae = _curve(rows, split, "mae")
            if mae is None:
                continue
            part = {
                "mae_mean": mae.mean(0).tolist(),
                "mae_std": mae.std(0).tolist(),
                "mae_per_seed": mae.tolist(),
                "final_mae_mean": float(mae[:, -1].mean()),
                "final_mae_std": float(mae[:, -1].std()),
                "aulc": _aulc(labels, mae.mean(0)),
            }
            for key in ("spearman_err_std", "miscalibration_area", "coverage_95"):
                values = _curve(rows, split, key)
                if values is not None:
                    part[f"{key}_mean"] = np.nanmean(values, axis=0).tolist()
            curve[split] = part
        if rows[0][0]["hits"] is not None:
            hits = np.asarray([[r["hits"] for r in run] for run in rows], dtype=float)
            curve["hits_mean"] = hits.mean(0).tolist()
            curve["hits_std"] = hits.std(0).tolist()
            curve["hits_per_seed"] = hits.tolist()
        if rows[0][0].get("stable_classifier") is not None:
            curve["stable_classifier"] = _classifier_curve(rows)
        curve["seconds"] = _seconds(rows)
        curves[strategy] = curve
    headline: dict[str, Any] = {}
    if "random" in curves:
        for strategy, curve in curves.items():
            h: dict[str, Any] = {}
            for split in ("test", "transductive"):
                if split in curve and split in curves["random"]:
                    h[split] = _learning_headline(curve, curves["random"], split, bootstrap)
            if "hits_mean" in curve and hits_total and pool_size:
                h["discovery"] = _discovery_headline(curve, curves["random"], hits_total, pool_size)
            headline[strategy] = h
    return {"curves": curves, "headline": headline}


def stable_classifier(predicted: np.ndarray, true: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """A model as a classifier of "stable" (distance to the convex hull ≤ ``threshold``, eV/atom),
    scored as matbench-discovery does (Riebesell et al., Nat. Mach. Intell. 2025): precision,
    recall, F1 and the discovery acceleration factor DAF = precision / prevalence (how many times
    more stable crystals per calculation than picking at random). Undefined ratios are 0."""
    predicted_stable = np.asarray(predicted) <= threshold
    stable = np.asarray(true) <= threshold
    tp = int((predicted_stable & stable).sum())
    n_predicted, n_stable, n = int(predicted_stable.sum()), int(stable.sum()), len(stable)
    precision = tp / n_predicted if n_predicted else 0.0
    recall = tp / n_stable if n_stable else 0.0
    prevalence = n_stable / n if n else 0.0
    return {
        "n": n,
        "prevalence": prevalence,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "daf": precision / prevalence if prevalence else 0.0,
    }


def _classifier_curve(rows: list[list[dict[str, Any]]]) -> dict[str, list[float | None]]:
    """Per round, the mean over seeds of each model's "stable" classifier on the unlabelled pool."""
    out: dict[str, list[float | None]] = {}
    for key in ("precision", "recall", "f1", "daf", "prevalence"):
        values = [[(r.get("stable_classifier") or {}).get(key) for r in run] for run in rows]
        out[f"{key}_mean"] = [
            None if any(v is None for v in col) else round(float(np.mean(col)), 4)
            for col in zip(*values, strict=True)
        ]
    return out


def _aulc(labels: np.ndarray, mae: np.ndarray) -> float:
    span = labels[-1] - labels[0]
    return float(np.trapezoid(mae, labels) / span) if span > 0 else float(mae.mean())


def _seconds(rows: list[list[dict[str, Any]]]) -> dict[str, float]:
    wall = sum(r["seconds"].get("wall", 0.0) for run in rows for r in run)
    tools = sum(r["seconds"].get("tools", 0.0) for run in rows for r in run)
    return {"wall": round(wall, 1), "in_tools": round(tools, 1)}


def _learning_headline(
    curve: dict[str, Any], random: dict[str, Any], split: str, bootstrap: int
) -> dict[str, Any]:
    labels = np.asarray(curve["labels"])
    mine, rnd = np.asarray(curve[split]["mae_per_seed"]), np.asarray(random[split]["mae_per_seed"])
    r_labels = np.asarray(random["labels"])

    def ratio(m: np.ndarray, r: np.ndarray) -> float | None:
        level = r[:, -1].mean()
        need = labels_to_reach(labels, m.mean(0), level)
        base = labels_to_reach(r_labels, r.mean(0), level)
        return None if need is None or not base else need / base

    rng = np.random.default_rng(0)
    n = len(mine)
    samples = [
        ratio(mine[rng.integers(0, n, n)], rnd[rng.integers(0, len(rnd), len(rnd))]) for _ in range(bootstrap)
    ]
    finite = np.asarray([s if s is not None else math.inf for s in samples])
    lo, hi = np.quantile(finite, [0.05, 0.95], method="inverted_cdf")
    level = float(rnd[:, -1].mean())
    return {
        "random_final_mae": level,
        "labels_to_reach_random_final": labels_to_reach(labels, mine.mean(0), level),
        "labels_ratio": ratio(mine, rnd),
        "labels_ratio_ci90": [None if not np.isfinite(b) else float(b) for b in (lo, hi)],
        "aulc_ratio": curve[split]["aulc"] / random[split]["aulc"],
        "final_mae_mean": curve[split]["final_mae_mean"],
        "final_mae_std": curve[split]["final_mae_std"],
        "spearman_mean": _mean_of(curve[split].get("spearman_err_std_mean")),
        "miscalibration_mean": _mean_of(curve[split].get("miscalibration_area_mean")),
    }


def _mean_of(values: list[float] | None) -> float | None:
    """Mean along a curve (ignoring NaN), or None without values."""
    finite = [v for v in values or [] if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _discovery_headline(
    curve: dict[str, Any], random: dict[str, Any], hits_total: int, pool_size: int
) -> dict[str, Any]:
    labels = np.asarray(curve["labels"])
    per_seed = np.asarray(curve["hits_per_seed"])
    final = per_seed[:, -1]
    factors = []
    for run, h in zip(per_seed, final, strict=True):
        if h <= 0:
            continue
        needed = labels[int(np.flatnonzero(run >= h)[0])]
        factors.append(expected_random_labels(h, hits_total, pool_size) / needed)
    random_hits = float(np.mean(random["hits_per_seed"], axis=0)[-1])
    return {
        "hits_mean": float(final.mean()),
        "hits_std": float(final.std()),
        "recall": float(final.mean() / hits_total),
        "enhancement_factor": float(final.mean() / random_hits) if random_hits else None,
        "acceleration_factor": float(np.mean(factors)) if factors else None,
        "random_hits_expected": float(labels[-1] * hits_total / pool_size),
        "target_set_size": hits_total,
    }


def expected_random_labels(hits: float, targets: int, pool: int) -> float:
    """Expected draws without replacement from ``pool`` items (``targets`` of them hits) until the
    ``hits``-th hit: the negative hypergeometric mean h·(N+1)/(K+1)."""
    return hits * (pool + 1) / (targets + 1)


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Test MAE vs labels (mean ± std over seeds) per strategy; hits vs labels for discovery."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = summary["curves"]
    panels = [p for p in ("test", "hits") if any((p in c) or (p + "_mean") in c for c in curves.values())]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5.5 * max(len(panels), 1), 4.2), squeeze=False)
    unit = summary.get("unit", "")
    for ax, panel in zip(axes[0], panels, strict=False):
        for strategy, c in curves.items():
            x = np.asarray(c["labels"])
            if panel == "test" and "test" in c:
                m, s = np.asarray(c["test"]["mae_mean"]), np.asarray(c["test"]["mae_std"])
            elif panel == "hits" and "hits_mean" in c:
                m, s = np.asarray(c["hits_mean"]), np.asarray(c["hits_std"])
            else:
                continue
            ax.plot(x, m, marker="o", ms=3, label=strategy)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ylabel = (
            (f"test MAE ({unit})" if unit else "test MAE") if panel == "test" else "hits (labelled targets)"
        )
        ax.set(xlabel="labels", ylabel=ylabel, title=summary.get("dataset", ""))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
