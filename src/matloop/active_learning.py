"""Pool-based active-learning simulation: strategies compared on a labelled dataset.

Labels are revealed from the dataset itself (the ``lookup`` level). Protocol:

- a fixed, seeded test split (``data_seed``) that is never selectable, and a pool;
- for every seed, one initial labelled set drawn from the pool, shared by every strategy;
- each round: train the UQ model on the labelled set (round 0 from scratch, once per seed and
  shared by every strategy; later rounds warm-started by fine-tuning unless
  ``warm_start=False``), record test metrics, then select
  a batch from the unlabelled pool with :func:`matloop.acquisition.select`;
- one JSON state file per finished round (plus the model checkpoint), so a rerun skips
  finished rounds and continues where it stopped.

:func:`summarise` turns the curves into the headline figures: labels each strategy needs to
reach random sampling's final test MAE (and the ratio to random's), and the area under the
learning curve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch_geometric.data import Data

from matloop.acquisition import Goal, check_strategy, check_window, select
from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import GraphParams, featurize_items
from matloop.errors import ToolInputError, invalid_choice
from matloop.models import fine_tune_uq_model, fit_uq_model, load_checkpoint, save_checkpoint
from matloop.models.metrics import uq_metrics
from matloop.settings import Settings, get_settings

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int, dict[str, Any]], None]
"""Called after each finished round with (strategy, seed, round, record)."""


@dataclass
class ALData:
    """Graphs and true targets of a dataset, split into a selectable pool and a test set."""

    ids: list[str]
    graphs: list[Data]
    y: np.ndarray
    pool: np.ndarray
    test: np.ndarray
    unit: str = ""
    name: str = ""


@dataclass
class ALConfig:
    """Settings of one simulation (stored in every output file)."""

    strategies: list[str]
    init: int = 50
    batch: int = 25
    rounds: int = 10
    seeds: int = 3
    method: str = "ensemble"
    epochs: int = 100
    finetune_epochs: int = 30
    patience: int = 10
    warm_start: bool = True
    goal: Goal | None = None
    window: tuple[float, float] | None = None
    kappa: float = 2.0
    density_weight: float = 1.0
    val_fraction: float = 0.1
    model_options: dict[str, Any] = field(default_factory=dict)

    def validate(self, data: ALData) -> None:
        for s in self.strategies:
            check_strategy(s)
        if not self.strategies:
            raise ToolInputError("expected at least one strategy, got none")
        for name in ("init", "batch", "seeds"):
            if getattr(self, name) < 1:
                raise ToolInputError(f"expected {name} ≥ 1, got {getattr(self, name)}")
        if self.rounds < 0:
            raise ToolInputError(f"expected rounds ≥ 0, got {self.rounds}")
        need = self.init + self.batch * self.rounds
        if need > len(data.pool):
            raise ToolInputError(f"expected init + batch·rounds ≤ pool size {len(data.pool)}, got {need}")
        if self.window is not None:
            self.window = check_window(self.window)
        if "in_window" in self.strategies and self.window is None:
            raise ToolInputError("expected --window lo,hi for strategy 'in_window', got none")


# --- data ---------------------------------------------------------------------------------------


def build_al_data(
    ids: Sequence[str],
    structures: Sequence[Any],
    y: np.ndarray,
    *,
    pool_size: int | None,
    test_size: int,
    data_seed: int = 0,
    params: GraphParams | None = None,
    cache_path: Path | None = None,
    unit: str = "",
    name: str = "",
) -> ALData:
    """Subsample ``pool_size + test_size`` labelled items (seeded), build their graphs, split.

    Items with a NaN target or that cannot become a graph are skipped. The first
    ``test_size`` usable items of the seeded order are the test set, the rest the pool.
    """
    params = params or GraphParams()
    y = np.asarray(y, dtype=np.float64)
    order = np.random.default_rng(data_seed).permutation(np.flatnonzero(np.isfinite(y)))
    want = test_size + (pool_size if pool_size is not None else len(order))
    graphs: list[Data] = []
    cache = GraphCache(cache_path) if cache_path is not None else None
    try:
        start = 0
        while len(graphs) < want and start < len(order):
            chunk = order[start : start + int((want - len(graphs)) * 1.05) + 16]
            start += len(chunk)
            done = featurize_items(
                [structures[k] for k in chunk], [str(ids[k]) for k in chunk], params, cache=cache
            )
            graphs.extend(done.graphs)
    finally:
        if cache is not None:
            cache.close()
    graphs = graphs[:want]
    if len(graphs) <= test_size:
        raise ToolInputError(f"expected more than test_size={test_size} usable items, got {len(graphs)}")
    target = dict(zip((str(i) for i in ids), y, strict=True))
    idx = np.arange(len(graphs))
    return ALData(
        ids=[g.item_id for g in graphs],
        graphs=graphs,
        y=np.asarray([target[g.item_id] for g in graphs]),
        pool=idx[test_size:],
        test=idx[:test_size],
        unit=unit,
        name=name,
    )


def load_dataset(
    dataset: str,
    target: str,
    *,
    pool_size: int | None = 3000,
    test_size: int = 1000,
    data_seed: int = 0,
    params: GraphParams | None = None,
    settings: Settings | None = None,
) -> ALData:
    """A dataset source (``matloop.data.sources.load_source``) as :class:`ALData`; graphs go
    through the on-disk graph cache of the settings."""
    from matloop.data.sources import load_source

    settings = settings or get_settings()
    data = load_source(dataset, settings=settings)
    if target not in data.properties.columns:
        raise invalid_choice(f"a property of {dataset!r}", target, data.properties.columns)
    return build_al_data(
        data.ids,
        data.structures,
        data.target(target),
        pool_size=pool_size,
        test_size=test_size,
        data_seed=data_seed,
        params=params,
        cache_path=settings.cache_dir / "graphs.sqlite",
        unit=data.units.get(target, ""),
        name=f"{dataset}:{target}",
    )


# --- model adapter ------------------------------------------------------------------------------


def _train(
    model: Any,
    graphs: list[Data],
    y: np.ndarray,
    config: ALConfig,
    seed: int,
) -> Any:
    """Fit from scratch (``model`` None or no warm start) or fine-tune, on a seeded train/val split."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(graphs))
    n_val = max(1, round(config.val_fraction * len(graphs))) if len(graphs) >= 10 else 0
    val, train = order[:n_val], order[n_val:]
    tr_g, tr_y = [graphs[i] for i in train], y[train]
    va_g, va_y = [graphs[i] for i in val], y[val]
    if model is None or not config.warm_start:
        return fit_uq_model(
            tr_g,
            tr_y,
            va_g,
            va_y,
            method=config.method,
            seed=seed,
            epochs=config.epochs,
            **config.model_options,
        )
    return fine_tune_uq_model(
        model, tr_g, tr_y, va_g, va_y, freeze_backbone=False, epochs=config.finetune_epochs, seed=seed
    )


# --- the loop -----------------------------------------------------------------------------------


def _round_path(run_dir: Path, r: int) -> Path:
    return run_dir / f"round_{r:03d}.json"


def _ckpt_path(run_dir: Path, r: int) -> Path:
    return run_dir / f"model_{r:03d}.pt"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a crash never leaves a half-written state file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def _last_round(run_dir: Path) -> dict[str, Any] | None:
    files = sorted(run_dir.glob("round_*.json"))
    return json.loads(files[-1].read_text()) if files else None


def initial_set(data: ALData, init: int, seed: int) -> np.ndarray:
    """The initial labelled items of ``seed`` (dataset positions), shared by all strategies."""
    return np.sort(np.random.default_rng(10_000 + seed).choice(data.pool, size=init, replace=False))


def run_strategy(
    data: ALData,
    config: ALConfig,
    strategy: str,
    seed: int,
    out_dir: Path,
    progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """One strategy × seed: resume from the last finished round, run the rest, return all records."""
    run_dir = Path(out_dir) / strategy / f"seed_{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    pos = {item_id: k for k, item_id in enumerate(data.ids)}
    last = _last_round(run_dir)
    if last is None:
        labelled, start, model = initial_set(data, config.init, seed), 0, None
    else:
        labelled = np.asarray([pos[i] for i in last["labelled_ids"] + last["selected_ids"]])
        start = last["round"] + 1
        ckpt = _ckpt_path(run_dir, last["round"])
        model = load_checkpoint(ckpt) if config.warm_start and ckpt.exists() else None
        if start <= config.rounds:
            log.info("%s seed %d: resuming at round %d", strategy, seed, start)
    test_graphs = [data.graphs[i] for i in data.test]
    y_test = data.y[data.test]
    for r in range(start, config.rounds + 1):
        t0 = time.perf_counter()
        model_seed = 1000 * seed + r
        if r == 0:
            model, metrics = _initial_model(data, config, labelled, seed, Path(out_dir))
        else:
            model = _train(model, [data.graphs[i] for i in labelled], data.y[labelled], config, model_seed)
            pred = model.predict(test_graphs)
            metrics = uq_metrics(y_test, pred.mean, pred.std).model_dump()
        selected: list[str] = []
        if r < config.rounds:
            selected = _select_batch(data, config, strategy, model, labelled, seed=model_seed)
        record = {
            "strategy": strategy,
            "seed": seed,
            "round": r,
            "n_labels": len(labelled),
            "test": metrics,
            "hits": _hits(data.y[labelled], config.window),
            "seconds": round(time.perf_counter() - t0, 3),
            "labelled_ids": [data.ids[i] for i in labelled],
            "selected_ids": selected,
        }
        if config.warm_start:
            save_checkpoint(model, _ckpt_path(run_dir, r))
        _write_json(_round_path(run_dir, r), record)
        _ckpt_path(run_dir, r - 1).unlink(missing_ok=True)
        if progress is not None:
            progress(strategy, seed, r, record)
        log.info(
            "%s seed %d round %d: %d labels, test MAE %.4g", strategy, seed, r, len(labelled), metrics["mae"]
        )
        labelled = np.concatenate([labelled, np.asarray([pos[i] for i in selected], dtype=np.int64)])
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("round_*.json"))][: config.rounds + 1]


def _initial_model(
    data: ALData, config: ALConfig, labelled: np.ndarray, seed: int, out_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """The round-0 model of ``seed`` and its test metrics: trained once, shared by all strategies."""
    run_dir = out_dir / "_initial" / f"seed_{seed}"
    ckpt, record = run_dir / "model.pt", run_dir / "test.json"
    if ckpt.exists() and record.exists():
        return load_checkpoint(ckpt), json.loads(record.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    model = _train(None, [data.graphs[i] for i in labelled], data.y[labelled], config, 1000 * seed)
    pred = model.predict([data.graphs[i] for i in data.test])
    metrics = uq_metrics(data.y[data.test], pred.mean, pred.std).model_dump()
    save_checkpoint(model, ckpt)
    _write_json(record, metrics)
    return model, metrics


def _select_batch(
    data: ALData, config: ALConfig, strategy: str, model: Any, labelled: np.ndarray, *, seed: int
) -> list[str]:
    unlabelled = np.setdiff1d(data.pool, labelled)
    needs_model = strategy != "random"
    pool_pred = model.predict([data.graphs[i] for i in unlabelled]) if needs_model else None
    lab_emb = None
    if strategy == "batch_entropy":
        lab_emb = model.predict([data.graphs[i] for i in labelled]).embedding
    y_lab = data.y[labelled]
    best = None
    if config.goal is not None:
        best = float(y_lab.max() if config.goal == "maximize" else y_lab.min())
    n = len(unlabelled)
    picked = select(
        strategy,
        config.batch,
        pool_pred.mean if pool_pred is not None else np.zeros(n),
        pool_pred.std if pool_pred is not None else np.ones(n),
        pool_pred.embedding if pool_pred is not None else None,
        epistemic_std=pool_pred.epistemic_std if pool_pred is not None else None,
        goal=config.goal,
        best=best,
        window=config.window,
        kappa=config.kappa,
        labelled_embedding=lab_emb,
        density_weight=config.density_weight,
        seed=seed,
    )
    return [data.ids[unlabelled[i]] for i in picked.indices]


def _hits(y: np.ndarray, window: tuple[float, float] | None) -> int | None:
    if window is None:
        return None
    return int(np.sum((y > window[0]) & (y < window[1])))


def _check_resumable(out: Path, data: ALData, config: ALConfig) -> None:
    """Refuse to mix round states made with other settings or splits (more rounds is fine)."""
    split = hashlib.sha256("|".join(data.ids[i] for i in [*data.pool, -1, *data.test]).encode()).hexdigest()
    current = json.loads(json.dumps({**asdict(config), "rounds": None, "dataset": data.name, "split": split}))
    path = out / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = sorted(k for k in current.keys() | saved.keys() if current.get(k) != saved.get(k))
        if changed:
            raise ToolInputError(
                f"expected round states made with the same settings in {out}, got states that differ in "
                f"{changed}; use another output directory or start afresh"
            )
    _write_json(path, current)


def run_simulation(
    data: ALData,
    config: ALConfig,
    out_dir: str | Path,
    *,
    progress: ProgressCallback | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every strategy × seed (resumable); writes ``summary.json`` and ``learning_curve.png``."""
    config.validate(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, data, config)
    records: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for seed in range(config.seeds):
        for strategy in config.strategies:
            rows = run_strategy(data, config, strategy, seed, out, progress)
            records.setdefault(strategy, {})[seed] = rows
    summary = {
        "dataset": data.name,
        "unit": data.unit,
        "pool_size": len(data.pool),
        "test_size": len(data.test),
        "config": asdict(config),
        **(extra or {}),
        **summarise(records, window=config.window),
    }
    _write_json(out / "summary.json", summary)
    plot_curves(summary, out / "learning_curve.png")
    return summary


# --- summary ------------------------------------------------------------------------------------


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


def summarise(
    records: dict[str, dict[int, list[dict[str, Any]]]], *, window: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Curves (mean ± std over seeds) and headline figures per strategy.

    ``labels_to_reach_random_final`` is where each strategy's seed-averaged test-MAE curve
    first reaches random's final mean MAE; ``ratio_to_random`` divides it by the same number
    for random (< 1: fewer labels than random); ``acquired_ratio_to_random`` counts only the
    labels acquired after the shared initial set. ``aulc`` is the trapezoid area under the mean
    MAE curve divided by the label range (a mean MAE over the run); ``aulc_ratio_to_random``
    compares it with random's.
    """
    curves: dict[str, Any] = {}
    for strategy, by_seed in records.items():
        rows = [by_seed[s] for s in sorted(by_seed)]
        length = min(len(r) for r in rows)
        labels = np.asarray([r["n_labels"] for r in rows[0][:length]], dtype=float)
        mae = np.asarray([[r["test"]["mae"] for r in run[:length]] for run in rows])
        curve: dict[str, Any] = {
            "labels": labels.tolist(),
            "mae_mean": mae.mean(0).tolist(),
            "mae_std": mae.std(0).tolist(),
            "mae_per_seed": mae.tolist(),
            "nll_mean": np.mean([[r["test"]["nll"] for r in run[:length]] for run in rows], axis=0).tolist(),
            "spearman_mean": np.mean(
                [[r["test"]["spearman_err_std"] for r in run[:length]] for run in rows], axis=0
            ).tolist(),
            "final_mae_mean": float(mae[:, -1].mean()),
            "final_mae_std": float(mae[:, -1].std()),
            "seeds": sorted(by_seed),
            "seconds_total": float(sum(r["seconds"] for run in rows for r in run)),
        }
        if window is not None:
            hits = np.asarray([[r["hits"] for r in run[:length]] for run in rows], dtype=float)
            curve["hits_mean"] = hits.mean(0).tolist()
            curve["hits_std"] = hits.std(0).tolist()
        span = labels[-1] - labels[0]
        curve["aulc"] = float(np.trapezoid(mae.mean(0), labels) / span) if span > 0 else float(mae.mean())
        curves[strategy] = curve
    headline: dict[str, Any] = {}
    if "random" in curves:
        rnd = curves["random"]
        level = rnd["final_mae_mean"]
        init = rnd["labels"][0]
        base = labels_to_reach(np.asarray(rnd["labels"]), np.asarray(rnd["mae_mean"]), level)
        for strategy, curve in curves.items():
            need = labels_to_reach(np.asarray(curve["labels"]), np.asarray(curve["mae_mean"]), level)
            headline[strategy] = {
                "random_final_mae": level,
                "labels_to_reach_random_final": need,
                "ratio_to_random": None if need is None or not base else need / base,
                "acquired_ratio_to_random": None
                if need is None or base is None or base <= init
                else (need - init) / (base - init),
                "aulc": curve["aulc"],
                "aulc_ratio_to_random": curve["aulc"] / rnd["aulc"],
                "final_mae_mean": curve["final_mae_mean"],
                "final_mae_std": curve["final_mae_std"],
            }
    return {"curves": curves, "headline": headline}


def plot_curves(summary: dict[str, Any], path: Path) -> None:
    """Test MAE vs labels (mean ± std over seeds) per strategy; hits vs labels when a window is set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = summary["curves"]
    with_hits = any("hits_mean" in c for c in curves.values())
    fig, axes = plt.subplots(1, 2 if with_hits else 1, figsize=(11 if with_hits else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    for strategy, c in curves.items():
        x, m, s = (np.asarray(c[k]) for k in ("labels", "mae_mean", "mae_std"))
        ax.plot(x, m, marker="o", ms=3, label=strategy)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    unit = summary.get("unit", "")
    ax.set(
        xlabel="labels", ylabel=f"test MAE ({unit})" if unit else "test MAE", title=summary.get("dataset", "")
    )
    ax.legend()
    if with_hits:
        ax = axes[0, 1]
        for strategy, c in curves.items():
            x, m, s = (np.asarray(c[k]) for k in ("labels", "hits_mean", "hits_std"))
            ax.plot(x, m, marker="o", ms=3, label=strategy)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ax.set(xlabel="labels", ylabel="labelled items in window", title="hits")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
