"""GNN accuracy and calibration per uncertainty method, and transfer learning at small N.

On a fixed, seeded split (``matloop.active_learning.load_dataset``, data seed 0) each UQ
method is trained with early stopping on the validation split and σ recalibrated on it;
the test split gives MAE, RMSE, R², NLL, miscalibration area, Spearman(|err|, σ) and the
coverage of the 68 % / 95 % intervals. Time per epoch is reported as a ratio to one
ensemble member's epoch measured in the same run.

``--transfer`` adds the transfer-learning comparison at the same N: a model pretrained on a
large set of a source property, fine-tuned on N labels of the target property (all weights,
or the head only), against the same architecture trained from scratch on those N labels.
QM9: LUMO → HOMO–LUMO gap (other molecules); crystals: formation energy (flla) → PBE band
gap of the dielectric set.

    python benchmarks/gnn_accuracy.py --dataset qm9 --transfer          # full, ~10-15 min
    python benchmarks/gnn_accuracy.py --dataset mp_formation_energy --transfer
    python benchmarks/gnn_accuracy.py --dataset mp_dielectric --target n
    python benchmarks/gnn_accuracy.py --dataset qm9 --quick --transfer  # CI-sized

Writes ``benchmarks/results/gnn_accuracy_<dataset>[_<target>][_quick].json`` and a parity
plot with ±σ error bars next to it.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from _common import RESULTS_DIR, write_result
from matloop.active_learning.harness import ALData, load_dataset
from matloop.data.sources import load_source
from matloop.models.metrics import uq_metrics
from matloop.models.model import UQModel
from matloop.models.training import TrainOptions, fine_tune_uq_model, fit_uq_model
from matloop.models.uq import METHODS

TARGETS = {"qm9": "gap", "mp_formation_energy": "formation_energy_per_atom", "mp_dielectric": "band_gap"}
#: (train, val, test) per dataset; flla has 3,938 items, the dielectric set 1,056.
FULL_SIZES = {
    "qm9": (4000, 500, 1500),
    "mp_formation_energy": (2800, 300, 800),
    "mp_dielectric": (700, 100, 250),
}
QUICK_SIZES = (300, 60, 150)
#: source (dataset, property) → target (dataset, property) of the transfer comparison.
TRANSFER = {
    "qm9": (("qm9", "lumo"), ("qm9", "gap")),
    "mp_formation_energy": (
        ("mp_formation_energy", "formation_energy_per_atom"),
        ("mp_dielectric", "band_gap"),
    ),
    "mp_dielectric": (("mp_formation_energy", "formation_energy_per_atom"), ("mp_dielectric", "band_gap")),
}
SEED = 0
log = logging.getLogger("gnn_accuracy")


def split(data: ALData, n_train: int, n_val: int) -> dict[str, tuple[list[Any], np.ndarray]]:
    """Train / val from the pool, test as given by the data split."""
    pool, test = data.pool, data.test
    parts = {"train": pool[:n_train], "val": pool[n_train : n_train + n_val], "test": test}
    return {k: ([data.graphs[i] for i in idx], data.y[idx]) for k, idx in parts.items()}


def evaluate(model: UQModel, test: tuple[list[Any], np.ndarray]) -> tuple[dict[str, Any], Any]:
    pred = model.predict(test[0])
    return uq_metrics(test[1], pred.mean, pred.std).model_dump(), pred


def run_methods(
    sets: dict[str, tuple[list[Any], np.ndarray]], methods: list[str], opts: TrainOptions, ensemble_size: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    rows, preds = {}, {}
    for method in methods:
        start = time.perf_counter()
        model = fit_uq_model(
            *sets["train"], *sets["val"], method=method, seed=SEED, options=opts, ensemble_size=ensemble_size
        )
        seconds = time.perf_counter() - start
        metrics, pred = evaluate(model, sets["test"])
        epochs = int(model.meta["epochs_run"])
        rows[method] = {
            **metrics,
            "sigma_scale": float(model.sigma_scale),
            "epochs_run": epochs,
            "members": len(model.members),
            "train_seconds": round(seconds, 1),
            "seconds_per_epoch": seconds / max(epochs, 1),
        }
        preds[method] = pred
        log.info(
            "%s: MAE %.4f, miscal %.3f, %.0f s",
            method,
            metrics["mae"],
            metrics["miscalibration_area"],
            seconds,
        )
    if "ensemble" in rows:
        base = rows["ensemble"]["seconds_per_epoch"]
        for row in rows.values():
            row["epoch_time_ratio_to_ensemble_member"] = row["seconds_per_epoch"] / base
    return rows, preds


def parity_plot(
    sets: dict[str, tuple[list[Any], np.ndarray]], preds: dict[str, Any], unit: str, title: str, path: Any
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = sets["test"][1]
    fig, axes = plt.subplots(1, len(preds), figsize=(4 * len(preds), 4), squeeze=False)
    lo, hi = float(y.min()), float(y.max())
    for ax, (method, pred) in zip(axes[0], preds.items(), strict=True):
        ax.errorbar(y, pred.mean, yerr=pred.std, fmt="o", ms=2, alpha=0.4, elinewidth=0.5)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        mae = np.abs(pred.mean - y).mean()
        ax.set_title(f"{method}: MAE {mae:.3g} {unit}")
        ax.set_xlabel(f"true ({unit})")
        ax.set_ylabel(f"predicted μ ± σ ({unit})")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _with_target(data: ALData, dataset: str, prop: str) -> ALData:
    """The same graphs labelled with another property of the same source (NaN rows dropped)."""
    table = load_source(dataset).properties[prop]
    y = table.reindex(data.ids).to_numpy(dtype=np.float64)
    keep = np.isfinite(y)
    pos = np.cumsum(keep) - 1
    return ALData(
        ids=[i for i, k in zip(data.ids, keep, strict=True) if k],
        graphs=[g for g, k in zip(data.graphs, keep, strict=True) if k],
        y=y[keep],
        pool=pos[data.pool[keep[data.pool]]],
        test=pos[data.test[keep[data.test]]],
        unit=data.unit,
    )


def run_transfer(dataset: str, quick: bool, opts: TrainOptions, ensemble_size: int) -> dict[str, Any]:
    (src_set, src_prop), (dst_set, dst_prop) = TRANSFER[dataset]
    n_small = 100 if quick else 500
    n_pre = 600 if quick else 3000
    n_val, n_test = (30, 150) if quick else (100, 300)
    if src_set == dst_set:  # one dataset: pretrain and fine-tune on disjoint items
        data = load_dataset(
            dst_set, dst_prop, pool_size=n_pre + n_small + n_val, test_size=n_test, data_seed=1
        )
        small_idx = data.pool[n_pre : n_pre + n_small]
        val_idx = data.pool[n_pre + n_small :]
        src = _with_target(data, src_set, src_prop)
        pre = ([src.graphs[i] for i in src.pool[:n_pre]], src.y[src.pool[:n_pre]])
        pre_val = ([src.graphs[i] for i in src.pool[n_pre + n_small :]], src.y[src.pool[n_pre + n_small :]])
        src_unit = src.unit
    else:
        src = load_dataset(src_set, src_prop, pool_size=n_pre + n_val, test_size=0, data_seed=1)
        pre = ([src.graphs[i] for i in src.pool[:n_pre]], src.y[src.pool[:n_pre]])
        pre_val = ([src.graphs[i] for i in src.pool[n_pre:]], src.y[src.pool[n_pre:]])
        src_unit = src.unit
        data = load_dataset(dst_set, dst_prop, pool_size=n_small + n_val, test_size=n_test, data_seed=1)
        small_idx, val_idx = data.pool[:n_small], data.pool[n_small:]
    small = ([data.graphs[i] for i in small_idx], data.y[small_idx])
    val = ([data.graphs[i] for i in val_idx], data.y[val_idx])
    test = ([data.graphs[i] for i in data.test], data.y[data.test])
    t0 = time.perf_counter()
    pretrained = fit_uq_model(*pre, *pre_val, seed=SEED, options=opts, ensemble_size=ensemble_size)
    pre_s = time.perf_counter() - t0
    rows: dict[str, Any] = {}
    for name, make in {
        "scratch": lambda: fit_uq_model(*small, *val, seed=SEED, options=opts, ensemble_size=ensemble_size),
        "fine_tuned": lambda: fine_tune_uq_model(
            pretrained, *small, *val, new_target=True, seed=SEED, options=opts
        ),
        "fine_tuned_frozen_backbone": lambda: fine_tune_uq_model(
            pretrained, *small, *val, new_target=True, freeze_backbone=True, seed=SEED, options=opts
        ),
    }.items():
        t0 = time.perf_counter()
        model = make()
        rows[name] = {**evaluate(model, test)[0], "train_seconds": round(time.perf_counter() - t0, 1)}
        log.info("transfer %s: MAE %.4f", name, rows[name]["mae"])
    return {
        "source": {"dataset": src_set, "property": src_prop, "unit": src_unit, "n_train": len(pre[1])},
        "target": {"dataset": dst_set, "property": dst_prop, "unit": data.unit, "n_train": n_small},
        "n_val": len(val[1]),
        "n_test": len(test[1]),
        "pretrain_seconds": round(pre_s, 1),
        "results": rows,
        "mae_ratio_fine_tuned_to_scratch": rows["fine_tuned"]["mae"] / rows["scratch"]["mae"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(TARGETS), default="qm9")
    parser.add_argument(
        "--target", default=None, help="Property (default: gap / formation energy / band gap)."
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run.")
    parser.add_argument("--methods", default=",".join(METHODS), help="Comma-separated UQ methods.")
    parser.add_argument("--transfer", action="store_true", help="Add the transfer-learning comparison.")
    parser.add_argument("--epochs", type=int, default=None, help="Maximum epochs per network.")
    parser.add_argument("--ensemble-size", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("matloop.models", "matloop.data"):
        logging.getLogger(name).setLevel(logging.WARNING)

    target = args.target or TARGETS[args.dataset]
    n_train, n_val, n_test = QUICK_SIZES if args.quick else FULL_SIZES[args.dataset]
    opts = TrainOptions(epochs=args.epochs or (30 if args.quick else 60), patience=5 if args.quick else 8)
    start = time.perf_counter()
    data = load_dataset(args.dataset, target, pool_size=n_train + n_val, test_size=n_test, data_seed=0)
    sets = split(data, n_train, n_val)
    load_s = time.perf_counter() - start
    methods = [m for m in args.methods.split(",") if m]
    rows, preds = run_methods(sets, methods, opts, args.ensemble_size)
    suffix = ("" if args.target is None else f"_{target}") + ("_quick" if args.quick else "")
    name = f"gnn_accuracy_{args.dataset}{suffix}"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    png = RESULTS_DIR / f"{name}.png"
    parity_plot(sets, preds, data.unit, f"{args.dataset} {target}, {len(sets['train'][1])} train", png)
    payload: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "dataset": args.dataset,
        "target": target,
        "unit": data.unit,
        "seed": SEED,
        "data_seed": 0,
        "sizes": {k: len(v[1]) for k, v in sets.items()},
        "train_options": vars(opts),
        "ensemble_size": args.ensemble_size,
        "methods": rows,
        "plot": png.name,
    }
    if args.transfer:
        payload["transfer"] = run_transfer(args.dataset, args.quick, opts, args.ensemble_size)
    payload["seconds"] = {"load_and_graphs": round(load_s, 1), "total": round(time.perf_counter() - start, 1)}
    path = write_result(name, payload)
    log.info("wrote %s", path)
    cols = (
        ("MAE", 9),
        ("RMSE", 9),
        ("R2", 7),
        ("miscal", 8),
        ("spear", 7),
        ("c68", 6),
        ("c95", 6),
        ("s/ep", 7),
    )
    print(f"{'method':<12}" + "".join(f"{c:>{w}}" for c, w in cols))
    for method, r in rows.items():
        print(
            f"{method:<12}{r['mae']:>9.4f}{r['rmse']:>9.4f}{r['r2']:>7.3f}{r['miscalibration_area']:>8.3f}"
            f"{r['spearman_err_std']:>7.2f}{r['coverage_68']:>6.2f}{r['coverage_95']:>6.2f}{r['seconds_per_epoch']:>7.2f}"
        )
    for name_, r in payload.get("transfer", {}).get("results", {}).items():
        print(f"transfer {name_:<28} MAE {r['mae']:.4f} miscal {r['miscalibration_area']:.3f}")


if __name__ == "__main__":
    main()
