"""Surrogates side by side: learning curves of accuracy and of σ's quality, per task.

For every task a fixed test split (data seed 0: 1,000 items for formation energy and QM9,
300 for the dielectric set) is never trained on. For every seed s and N, the training set is
the first N items of a seeded permutation of the pool and the validation set (early stopping,
σ recalibration) the next max(20, N/5) — the same items for every surrogate. Figures on the
test split: MAE, RMSE, Spearman(|err|, σ), miscalibration area, 68/95 % coverage, NLL, training
and prediction seconds.

Surrogates (a backbone + a UQ head):

- ``current_ensemble``: today's default (5 CGCNN-style members, all on the same items).
- ``bootstrap_ensemble``: the same, each member on its own bootstrap resample.
- ``gnn_gp``: one CGCNN-style network, then an ARD-kernel GP on its pooled embeddings.
- ``schnet_ensemble``: 5 SchNet-style continuous-filter members (molecules only).
- ``chgnet_mlp`` / ``chgnet_gp``: frozen CHGNet 0.3.0 (crystal features + its energy per atom)
  → a bootstrapped ensemble of small MLPs / an ARD GP (crystal tasks only).
- ``chgnet_magpie_mlp``: CHGNet vector ⊕ Magpie composition statistics → MLP ensemble.
- ``sevennet_mlp``: frozen SevenNet-0 (128 last-layer scalars + energy per atom) → MLP ensemble.
- ``chgnet_level_fe``: the crystals' screening level alone (formation energy only): the
  ``chgnet_static`` level's formation energy per atom of the given (DFT-relaxed) structure
  against CHGNet-relaxed elemental references, shifted by the mean training residual; σ constant.
- ``chgnet_delta_mlp`` / ``chgnet_delta_gp``: multi-fidelity Δ-learning (formation energy only):
  a head on the CHGNet vector learns the DFT label minus the screening level's value.
- ``chgnet_static_delta_mlp`` (formation energy) / ``chgnet_magpie_static_mlp`` (band gap, n):
  what a crystal campaign runs by default: CHGNet ⊕ Magpie ⊕ the ``chgnet_static`` level's
  results (energy and formation energy per atom) → MLP ensemble, learning the label minus the
  level's formation energy where the target is one.
- Screening levels run through the validation machinery for every item of the task
  (:func:`matloop.active_learning.level_workspace`; single points cached across runs).
- ``xtb_level_gap``: the molecules' screening level alone (QM9 gap only): the GFN2-xTB HOMO–LUMO
  gap, shifted by its mean training residual; σ constant.
- ``xtb_delta_mlp`` / ``xtb_delta_gp``: what a molecule campaign runs by default (QM9 gap only):
  Magpie statistics ⊕ the GFN2-xTB level's results (energy, gap, HOMO, LUMO) → a head that learns
  the B3LYP gap minus the xTB gap.
- ``chgnet_ft_last1`` / ``chgnet_ft_all`` / ``sevennet_ft_last1``: CHGNet (SevenNet-0) fine-tuned
  under the MLP ensemble (:mod:`matloop.models.finetuned`): its last interaction block and
  read-out, or all of it, train with the heads after a linear probe (crystal tasks only); rows
  add the checkpoint size.
- ``chgnet_ft_last1_dropout`` / ``chgnet_ft_last1_gp``: the same last block of CHGNet fine-tuned
  under one MC-dropout MLP head (20 passes of the head), or under the MLP ensemble and then an
  ARD GP fitted on the fine-tuned vectors in place of the ensemble.
- ``rf_magpie``: random forest on Magpie statistics (mean/std/min/max over sites), σ = tree spread.
- ``gp_magpie``: ARD GP on the same features.

Every (task, surrogate, N, seed) cell is written to ``results/surrogates[_quick]/`` as soon as
it finishes, and a rerun skips finished cells; the summary JSON is rewritten after every cell
(the PNG after every tenth). Order (:func:`run_order`): everything at the smallest N, then
cheap surrogates and today's graph networks up to N = 300, cheap ones at N = 1000, the graph
network variants, the rest. An N that the pool cannot hold with its validation set (the
dielectric set's 756-item pool at N = 1000) is skipped.

    python benchmarks/surrogates.py                       # full: N = 100, 300, 1000; 3 seeds
    python benchmarks/surrogates.py --quick               # CI-sized
    python benchmarks/surrogates.py --tasks fe,gap --surrogates rf_magpie,chgnet_mlp
    python benchmarks/surrogates.py --summarise           # summary from the finished cells only
    python benchmarks/surrogates.py --tasks gap --sizes 100,300 --name surrogates_finetuned \
        --surrogates chgnet_mlp,chgnet_ft_last1,chgnet_ft_all   # another results file
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from _common import RESULTS_DIR, git_commit, write_result
from matloop.active_learning.harness import ALData, level_workspace, load_dataset
from matloop.data.composition import magpie_statistics
from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.sources import load_source
from matloop.models.finetuned import fit_finetuned, save_finetuned
from matloop.models.forest import ForestUQ
from matloop.models.foundation import embed_structures, get_pretrained
from matloop.models.metrics import uq_metrics
from matloop.models.training import TrainOptions, fit_uq_model
from matloop.models.vector_uq import fit_vector_model
from matloop.settings import get_settings
from matloop.validation.store import ValidationStore

log = logging.getLogger("surrogates")


@dataclass(frozen=True)
class Task:
    dataset: str
    target: str
    test_size: int
    pool_size: int | None


TASKS = {
    "fe": Task("mp_formation_energy", "formation_energy_per_atom", 1000, None),
    "gap": Task("mp_dielectric", "band_gap", 300, None),
    "n": Task("mp_dielectric", "n", 300, None),
    "qm9_gap": Task("qm9", "gap", 1000, 3000),
}
FULL = {"sizes": (100, 300, 1000), "seeds": (0, 1, 2)}
QUICK = {"sizes": (100,), "seeds": (0,), "test_size": 200, "pool_size": 400}
DATA_SEED = 0


def val_size(n: int) -> int:
    return max(20, n // 5)


# --- features -----------------------------------------------------------------------------------


@cache
def task_data(name: str, quick: bool) -> ALData:
    task = TASKS[name]
    test = QUICK["test_size"] if quick else task.test_size
    pool = QUICK["pool_size"] if quick else task.pool_size
    return load_dataset(task.dataset, task.target, pool_size=pool, test_size=test, data_seed=DATA_SEED)


@cache
def magpie(name: str, quick: bool) -> np.ndarray:
    return magpie_statistics([g.z.numpy() for g in task_data(name, quick).graphs])


def structures(name: str, quick: bool) -> list[Any]:
    source = load_source(TASKS[name].dataset)
    by_id = dict(zip(map(str, source.ids), source.structures, strict=True))
    return [by_id[i] for i in task_data(name, quick).ids]


def embedding_cache() -> Any:
    return get_settings().cache_dir / EmbeddingCache.FILE


@cache
def chgnet(name: str, quick: bool) -> np.ndarray:
    return embed_structures("chgnet", structures(name, quick), cache_path=embedding_cache())


@cache
def sevennet(name: str, quick: bool) -> np.ndarray:
    return embed_structures("sevennet_0", structures(name, quick), cache_path=embedding_cache())


@cache
def level_values(name: str, quick: bool, level: str) -> np.ndarray:
    """A screening level's results (columns sorted by property) for every item, computed once
    through the validation machinery (:func:`matloop.active_learning.level_workspace`)."""
    data = task_data(name, quick)
    out = get_settings().cache_dir / "benchmarks" / ("surrogates_quick" if quick else "surrogates") / name
    _, values = ValidationStore(level_workspace(data, level, out)).level_table(level, data.ids)
    return values


def chgnet_static_values(name: str, quick: bool) -> np.ndarray:
    """The crystals' screening level: CHGNet static energy and formation energy per atom."""
    return level_values(name, quick, "chgnet_static")


def chgnet_static_fe(name: str, quick: bool) -> np.ndarray:
    return chgnet_static_values(name, quick)[:, 1]  # columns: energy_per_atom, formation_energy_per_atom


def xtb_values(name: str, quick: bool) -> np.ndarray:
    """The molecules' screening level: GFN2-xTB energy, gap, HOMO, LUMO."""
    return level_values(name, quick, "xtb")


def xtb_gap(name: str, quick: bool) -> np.ndarray:
    return xtb_values(name, quick)[:, 1]  # columns sorted by property: energy, gap, homo, lumo


# --- surrogates ---------------------------------------------------------------------------------

Fitted = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Positions in the task's data → (μ, σ)."""


def _gnn(method: str, bootstrap: bool = False, **model_args: Any) -> Callable[..., Fitted]:
    def fit(name: str, quick: bool, tr: np.ndarray, va: np.ndarray, seed: int) -> Fitted:
        data = task_data(name, quick)
        opts = TrainOptions(bootstrap=bootstrap, **({"epochs": 30, "patience": 5} if quick else {}))
        model = fit_uq_model(
            [data.graphs[i] for i in tr],
            data.y[tr],
            [data.graphs[i] for i in va],
            data.y[va],
            method=method,
            seed=seed,
            options=opts,
            **model_args,
        )

        def predict(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pred = model.predict([data.graphs[i] for i in idx])
            return pred.mean, pred.std

        return predict

    return fit


def _vector(features: Callable[[str, bool], np.ndarray], head: str) -> Callable[..., Fitted]:
    def fit(name: str, quick: bool, tr: np.ndarray, va: np.ndarray, seed: int) -> Fitted:
        x, y = features(name, quick), task_data(name, quick).y
        if head == "rf":
            forest = ForestUQ(seed=seed).fit(x[tr], y[tr], x[va], y[va])
            return lambda idx: forest.predict(x[idx])
        model = fit_vector_model(x[tr], y[tr], x[va], y[va], method=head, seed=seed)

        def predict(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pred = model.predict(x[idx])
            return pred.mean, pred.std

        return predict

    return fit


def _delta(
    features: Callable[[str, bool], np.ndarray], cheap_level: Callable[[str, bool], np.ndarray], head: str
) -> Callable[..., Fitted]:
    """Δ-learning on a cheap level: a head on ``features`` learns y − (the cheap level's value)."""

    def fit(name: str, quick: bool, tr: np.ndarray, va: np.ndarray, seed: int) -> Fitted:
        x, cheap = features(name, quick), cheap_level(name, quick)
        resid = task_data(name, quick).y - cheap
        model = fit_vector_model(x[tr], resid[tr], x[va], resid[va], method=head, seed=seed)

        def predict(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pred = model.predict(x[idx])
            return cheap[idx] + pred.mean, pred.std

        return predict

    return fit


class _Checkpointed:
    """A fitted surrogate's predictions, with the size of its checkpoint file."""

    def __init__(self, predict: Fitted, checkpoint_bytes: int) -> None:
        self.predict, self.checkpoint_bytes = predict, checkpoint_bytes

    def __call__(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.predict(idx)


def _finetuned(
    backbone: str, trainable_blocks: int | str, head: str = "mlp_ensemble"
) -> Callable[..., Fitted]:
    """A pretrained network fine-tuned under a vector head (``trainable_blocks``: the last N
    blocks, or all)."""

    def fit(name: str, quick: bool, tr: np.ndarray, va: np.ndarray, seed: int) -> Fitted:
        items, y = structures(name, quick), task_data(name, quick).y
        model = fit_finetuned(
            [items[i] for i in tr],
            y[tr],
            [items[i] for i in va],
            y[va],
            backbone=backbone,
            method=head,
            trainable_blocks=trainable_blocks,
            seed=seed,
            **({"epochs": 3} if quick else {}),
        )
        with tempfile.TemporaryDirectory() as tmp:
            size = save_finetuned(model, os.path.join(tmp, "model.pt")).stat().st_size

        def predict(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pred = model.predict(model.vectors(model.graphs([items[i] for i in idx])))
            return pred.mean, pred.std

        return _Checkpointed(predict, size)

    return fit


def _cheap_level(cheap_level: Callable[[str, bool], np.ndarray]) -> Callable[..., Fitted]:
    """A cheap level alone, shifted by its mean training residual; σ = residual spread (constant)."""

    def fit(name: str, quick: bool, tr: np.ndarray, va: np.ndarray, seed: int) -> Fitted:
        cheap, seen = cheap_level(name, quick), np.concatenate([tr, va])
        resid = task_data(name, quick).y[seen] - cheap[seen]
        return lambda idx: (cheap[idx] + resid.mean(), np.full(len(idx), resid.std()))

    return fit


def _concat(*parts: Callable[[str, bool], np.ndarray]) -> Callable[[str, bool], np.ndarray]:
    return lambda name, quick: np.concatenate([p(name, quick) for p in parts], axis=1)


CRYSTAL = frozenset({"fe", "gap", "n"})
ALL = frozenset(TASKS)
#: name → (fit, tasks it applies to, rank in the run order: 0 cheap, 1 graph network, 2 its variant).
SURROGATES: dict[str, tuple[Callable[..., Fitted], frozenset[str], int]] = {
    "rf_magpie": (_vector(magpie, "rf"), ALL, 0),
    "gp_magpie": (_vector(magpie, "gp"), ALL, 0),
    "chgnet_mlp": (_vector(chgnet, "mlp_ensemble"), CRYSTAL, 0),
    "chgnet_gp": (_vector(chgnet, "gp"), CRYSTAL, 0),
    "chgnet_magpie_mlp": (_vector(_concat(chgnet, magpie), "mlp_ensemble"), CRYSTAL, 0),
    "sevennet_mlp": (_vector(sevennet, "mlp_ensemble"), CRYSTAL, 0),
    "chgnet_level_fe": (_cheap_level(chgnet_static_fe), frozenset({"fe"}), 0),
    "chgnet_delta_mlp": (_delta(chgnet, chgnet_static_fe, "mlp_ensemble"), frozenset({"fe"}), 0),
    "chgnet_delta_gp": (_delta(chgnet, chgnet_static_fe, "gp"), frozenset({"fe"}), 0),
    "chgnet_static_delta_mlp": (
        _delta(_concat(chgnet, magpie, chgnet_static_values), chgnet_static_fe, "mlp_ensemble"),
        frozenset({"fe"}),
        0,
    ),
    "chgnet_magpie_static_mlp": (
        _vector(_concat(chgnet, magpie, chgnet_static_values), "mlp_ensemble"),
        frozenset({"gap", "n"}),
        0,
    ),
    "xtb_level_gap": (_cheap_level(xtb_gap), frozenset({"qm9_gap"}), 0),
    "xtb_delta_mlp": (
        _delta(_concat(magpie, xtb_values), xtb_gap, "mlp_ensemble"),
        frozenset({"qm9_gap"}),
        0,
    ),
    "xtb_delta_gp": (_delta(_concat(magpie, xtb_values), xtb_gap, "gp"), frozenset({"qm9_gap"}), 0),
    "current_ensemble": (_gnn("ensemble"), ALL, 1),
    "gnn_gp": (_gnn("gp"), ALL, 1),
    "schnet_ensemble": (_gnn("ensemble", conv="schnet"), frozenset({"qm9_gap"}), 1),
    "bootstrap_ensemble": (_gnn("ensemble", bootstrap=True), ALL, 2),
    "chgnet_ft_last1": (_finetuned("chgnet", 1), CRYSTAL, 1),
    "chgnet_ft_all": (_finetuned("chgnet", "all"), CRYSTAL, 1),
    "sevennet_ft_last1": (_finetuned("sevennet_0", 1), CRYSTAL, 1),
    "chgnet_ft_last1_dropout": (_finetuned("chgnet", 1, "mlp_dropout"), CRYSTAL, 1),
    "chgnet_ft_last1_gp": (_finetuned("chgnet", 1, "gp"), CRYSTAL, 1),
}
#: Features a surrogate reads, computed (and timed) before its training clock starts.
FEATURES: dict[str, tuple[Callable[[str, bool], np.ndarray], ...]] = {
    "rf_magpie": (magpie,),
    "gp_magpie": (magpie,),
    "chgnet_mlp": (chgnet,),
    "chgnet_gp": (chgnet,),
    "chgnet_magpie_mlp": (chgnet, magpie),
    "sevennet_mlp": (sevennet,),
    "chgnet_level_fe": (chgnet_static_values,),
    "chgnet_delta_mlp": (chgnet_static_values, chgnet),
    "chgnet_delta_gp": (chgnet_static_values, chgnet),
    "chgnet_static_delta_mlp": (chgnet_static_values, chgnet, magpie),
    "chgnet_magpie_static_mlp": (chgnet_static_values, chgnet, magpie),
    "xtb_level_gap": (xtb_values,),
    "xtb_delta_mlp": (xtb_values, magpie),
    "xtb_delta_gp": (xtb_values, magpie),
}
#: Seconds of the first (uncached in memory) computation of each feature per task in this run.
FEATURE_SECONDS: dict[str, dict[str, float]] = {}


CHEAP_LEVEL_COST: dict[str, Any] = {}


def measure_cheap_level(quick: bool, n: int = 200) -> None:
    """Seconds per structure of the cheap level (CHGNet static pass, no cache) on formation-energy items."""
    items = structures("fe", quick)[:n]
    start = time.perf_counter()
    embed_structures("chgnet", items, cache_path=None)
    seconds = time.perf_counter() - start
    CHEAP_LEVEL_COST.update(
        {
            "level": "chgnet_static: CHGNet 0.3.0 single point, the same pass as its embedding (no cache)",
            "structures": len(items),
            "seconds_per_structure": seconds / len(items),
            "mean_sites": float(np.mean([len(s) for s in items])),
            "threads": torch.get_num_threads(),
        }
    )


def prepare_features(name: str, surrogate: str, quick: bool) -> None:
    for features in FEATURES.get(surrogate, ()):
        done = FEATURE_SECONDS.setdefault(name, {})
        if features.__name__ not in done:
            start = time.perf_counter()
            features(name, quick)
            done[features.__name__] = round(time.perf_counter() - start, 1)


# --- cells --------------------------------------------------------------------------------------


def split(name: str, quick: bool, n: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Training and validation positions of (N, seed), or None when the pool is too small."""
    pool = task_data(name, quick).pool
    if n + val_size(n) > len(pool):
        return None
    order = np.random.default_rng(1000 + seed).permutation(pool)
    return order[:n], order[n : n + val_size(n)]


def run_order(n: int, rank: int, n_min: int) -> tuple[int, ...]:
    """Most informative cells first: everything at the smallest N; cheap surrogates and today's
    graph networks at N ≤ 300; cheap surrogates at larger N; variants at N ≤ 300; the rest."""
    if n == n_min:
        return (0, rank)
    if n <= 300 and rank < 2:
        return (1, n, rank)
    if rank == 0:
        return (2, n)
    return (3, n, rank) if n <= 300 else (4, n, rank)


def run_cell(name: str, surrogate: str, n: int, seed: int, quick: bool) -> dict[str, Any] | None:
    parts = split(name, quick, n, seed)
    if parts is None:
        return None
    data = task_data(name, quick)
    fit = SURROGATES[surrogate][0]
    prepare_features(name, surrogate, quick)
    t0 = time.perf_counter()
    predict = fit(name, quick, *parts, seed)
    t1 = time.perf_counter()
    mean, std = predict(data.test)
    t2 = time.perf_counter()
    metrics = uq_metrics(data.y[data.test], mean, std).model_dump()
    row = {**metrics, "train_s": t1 - t0, "predict_s": t2 - t1, "n_train": n, "n_val": len(parts[1])}
    if isinstance(predict, _Checkpointed):
        row["checkpoint_mb"] = predict.checkpoint_bytes / 1e6
    return row


def cell_path(root: Any, name: str, surrogate: str, n: int, seed: int) -> Any:
    return root / name / surrogate / f"N{n}_seed{seed}.json"


def summarise(root: Any, tasks: list[str], quick: bool) -> dict[str, Any]:
    cfg = QUICK if quick else FULL
    out: dict[str, Any] = {}
    for name in tasks:
        data = task_data(name, quick)
        surrogates: dict[str, Any] = {}
        for surrogate in SURROGATES:
            by_n: dict[str, Any] = {}
            for n in cfg["sizes"]:
                rows = [
                    json.loads(p.read_text())
                    for seed in cfg["seeds"]
                    if (p := cell_path(root, name, surrogate, n, seed)).exists()
                ]
                if not rows:
                    continue

                def stat(key: str, rows: list[dict[str, Any]] = rows) -> np.ndarray:
                    return np.array([r[key] for r in rows], dtype=float)

                by_n[str(n)] = {
                    "seeds_done": len(rows),
                    "mae_mean": stat("mae").mean(),
                    "mae_std": stat("mae").std(),
                    "rmse_mean": stat("rmse").mean(),
                    "spearman_mean": float(np.nanmean(stat("spearman_err_std"))),
                    "spearman_std": float(np.nanstd(stat("spearman_err_std"))),
                    "miscalibration_mean": stat("miscalibration_area").mean(),
                    "cov68_mean": stat("coverage_68").mean(),
                    "cov95_mean": stat("coverage_95").mean(),
                    "nll_mean": stat("nll").mean(),
                    "train_s": stat("train_s").mean(),
                    "predict_s": stat("predict_s").mean(),
                }
                if all("checkpoint_mb" in r for r in rows):
                    by_n[str(n)]["checkpoint_mb"] = stat("checkpoint_mb").mean()
            if by_n:
                surrogates[surrogate] = {"N": by_n}
        out[name] = {
            "dataset": TASKS[name].dataset,
            "target": TASKS[name].target,
            "unit": data.unit,
            "test_size": len(data.test),
            "pool_size": len(data.pool),
            "seeds": list(cfg["seeds"]),
            "surrogates": surrogates,
        }
    return out


def plot(tasks: dict[str, Any], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(tasks), figsize=(4.2 * len(tasks), 7), squeeze=False)
    for col, (name, task) in enumerate(tasks.items()):
        for surrogate, res in task["surrogates"].items():
            ns = sorted(int(n) for n in res["N"])
            mae = [res["N"][str(n)]["mae_mean"] for n in ns]
            err = [res["N"][str(n)]["mae_std"] for n in ns]
            rho = [res["N"][str(n)]["spearman_mean"] for n in ns]
            color = plt.get_cmap("tab20")(list(SURROGATES).index(surrogate))  # one colour per surrogate
            axes[0][col].errorbar(ns, mae, yerr=err, marker="o", ms=3, label=surrogate, color=color)
            axes[1][col].plot(ns, rho, marker="o", ms=3, label=surrogate, color=color)
        axes[0][col].set_title(f"{name} ({task['unit']})")
        axes[0][col].set_xscale("log")
        axes[0][col].set_yscale("log")
        axes[0][col].set_ylabel("test MAE")
        axes[1][col].set_xscale("log")
        axes[1][col].set_ylabel("Spearman(|err|, σ)")
        axes[1][col].set_xlabel("training items N")
    for ax in axes[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run.")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--surrogates", default=",".join(SURROGATES))
    parser.add_argument("--sizes", default=None, help="Comma-separated N (default: 100,300,1000).")
    parser.add_argument(
        "--name",
        default=None,
        help="Results name: results/<name>.json and cells (default surrogates[_quick]).",
    )
    parser.add_argument(
        "--summarise", action="store_true", help="Only rewrite the summary (JSON + PNG) from finished cells."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("matloop.models", "matloop.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    tasks = [t for t in args.tasks.split(",") if t]
    surrogates = [s for s in args.surrogates.split(",") if s]
    for t in tasks:
        if t not in TASKS:
            parser.error(f"unknown task {t!r}; valid: {sorted(TASKS)}")
    for s in surrogates:
        if s not in SURROGATES:
            parser.error(f"unknown surrogate {s!r}; valid: {sorted(SURROGATES)}")
    cfg = QUICK if args.quick else FULL
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else list(cfg["sizes"])
    name = args.name or ("surrogates_quick" if args.quick else "surrogates")
    root = RESULTS_DIR / name
    cells = [
        (n, surrogate, task, seed)
        for n in sizes
        for surrogate in surrogates
        for task in tasks
        for seed in cfg["seeds"]
        if task in SURROGATES[surrogate][1]
    ]
    cells.sort(key=lambda c: run_order(c[0], SURROGATES[c[1]][2], min(sizes)))
    commit = git_commit()
    if "fe" in tasks and any(s.startswith("chgnet") for s in surrogates):
        measure_cheap_level(args.quick)
    for k, (n, surrogate, task, seed) in enumerate([] if args.summarise else cells):
        path = cell_path(root, task, surrogate, n, seed)
        if path.exists():
            continue
        start = time.perf_counter()
        row = run_cell(task, surrogate, n, seed, args.quick)
        if row is None:
            log.info("%s N=%d: pool too small, skipped", task, n)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1))
        os.replace(tmp, path)
        log.info(
            "%s %s N=%d seed %d: MAE %.4g spearman %.2f miscal %.3f (%.0f s)",
            task,
            surrogate,
            n,
            seed,
            row["mae"],
            row["spearman_err_std"],
            row["miscalibration_area"],
            time.perf_counter() - start,
        )
        write_summary(root, name, tasks, sizes, surrogates, args.quick, commit, with_plot=k % 10 == 0)
    write_summary(root, name, tasks, sizes, surrogates, args.quick, commit, with_plot=True)


def write_summary(
    root: Any,
    name: str,
    tasks: list[str],
    sizes: list[int],
    surrogates: list[str],
    quick: bool,
    commit: str | None,
    *,
    with_plot: bool,
) -> None:
    """The summary JSON of all finished cells; ``code_commit`` is the code the run started with."""
    summary = summarise(root, tasks, quick)
    png = RESULTS_DIR / f"{name}.png"
    if with_plot:
        plot(summary, png)
    write_result(
        name,
        {
            "code_commit": commit,
            "mode": "quick" if quick else "full",
            "data_seed": DATA_SEED,
            "sizes": sizes,
            "validation": "max(20, N/5) further pool items, the same for every surrogate",
            "pretrained": {name: get_pretrained(name).provenance() for name in ("chgnet", "sevennet_0")},
            "surrogates_run": surrogates,
            "feature_seconds_this_run": FEATURE_SECONDS,
            "cheap_level_cost": CHEAP_LEVEL_COST,
            "tasks": summary,
            "plot": png.name,
        },
    )


if __name__ == "__main__":
    main()
