"""Active learning vs random sampling: labels needed to reach random's final test MAE.

Pool-based simulation (labels revealed from the dataset, the ``lookup`` level) with
:mod:`matloop.active_learning`: a fixed seeded test split never selectable, one initial
labelled set per seed shared by every strategy, a deep ensemble fine-tuned (warm start) each
round. Headline figures per strategy: labels needed to reach random's final mean test MAE and
the ratio to random's (< 1 is better than random), area under the learning curve.

    python benchmarks/active_learning.py --dataset qm9                  # full, ~20 min on 2 busy cores
    python benchmarks/active_learning.py --dataset mp_formation_energy
    python benchmarks/active_learning.py --dataset mp_dielectric
    python benchmarks/active_learning.py --dataset qm9 --quick          # CI-sized

Writes ``benchmarks/results/active_learning_<dataset>.json`` (``..._quick.json`` in quick mode)
and a PNG of the learning curves next to it. Round states go to ``--state`` (default under the
matloop cache), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, write_result
from matloop.active_learning import ALConfig, load_dataset, run_simulation
from matloop.settings import get_settings

TARGETS = {"qm9": "gap", "mp_formation_energy": "formation_energy_per_atom", "mp_dielectric": "band_gap"}
STRATEGIES = ["entropy", "batch_entropy", "max_std", "random"]

#: Sizes per dataset: (pool, test) in full mode; the dielectric set has only 1,056 items.
FULL_SIZES = {"qm9": (1000, 400), "mp_formation_energy": (1000, 400), "mp_dielectric": (700, 300)}
FULL = dict(init=50, batch=25, rounds=6, seeds=3)
QUICK_SIZES = (300, 100)
QUICK = dict(init=20, batch=10, rounds=3, seeds=2)
MODEL = dict(method="ensemble", epochs=100, finetune_epochs=15, patience=5)
MODEL_OPTIONS = {"ensemble_size": 3, "hidden": 32}
QUICK_MODEL = dict(method="ensemble", epochs=20, finetune_epochs=8, patience=5)


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--dataset", choices=sorted(TARGETS), default="qm9")
    parser.add_argument("--quick", action="store_true", help="CI-sized run.")
    parser.add_argument("--seeds", type=int, default=None, help="Override the number of seeds.")
    parser.add_argument("--rounds", type=int, default=None, help="Override the number of rounds.")
    parser.add_argument("--pool", type=int, default=None, help="Override the pool size.")
    parser.add_argument("--test", type=int, default=None, help="Override the test-set size.")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--state", type=Path, default=None, help="Directory of the resumable round states.")
    parser.add_argument("--fresh", action="store_true", help="Discard saved round states first.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("matloop.models", "matloop.data"):
        logging.getLogger(name).setLevel(logging.WARNING)

    name = f"active_learning_{args.dataset}" + ("_quick" if args.quick else "")
    state = args.state or get_settings().cache_dir / "benchmarks" / name
    if args.fresh and state.exists():
        shutil.rmtree(state)
    pool, test = QUICK_SIZES if args.quick else FULL_SIZES[args.dataset]
    pool, test = args.pool or pool, args.test or test
    reduced = any(v is not None for v in (args.seeds, args.rounds, args.pool, args.test))
    sizes: dict[str, Any] = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "rounds"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    config = ALConfig(
        strategies=[s for s in args.strategies.split(",") if s],
        **sizes,
        **(QUICK_MODEL if args.quick else MODEL),
        model_options=dict(MODEL_OPTIONS),
    )
    start = time.perf_counter()
    data = load_dataset(args.dataset, TARGETS[args.dataset], pool_size=pool, test_size=test, data_seed=0)
    load_s = time.perf_counter() - start
    summary = run_simulation(data, config, state)
    png = RESULTS_DIR / f"{name}.png"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state / "learning_curve.png", png)
    payload = {
        "mode": ("quick" if args.quick else "full") + (" (reduced by overrides)" if reduced else ""),
        "dataset": args.dataset,
        "target": TARGETS[args.dataset],
        "unit": data.unit,
        "seeds": list(range(config.seeds)),
        "data_seed": 0,
        "pool_size": len(data.pool),
        "test_size": len(data.test),
        "config": asdict(config),
        "headline": summary["headline"],
        "curves": summary["curves"],
        "plot": png.name,
        "seconds": {"load_and_graphs": round(load_s, 1), "total": round(time.perf_counter() - start, 1)},
        "notes": (
            "labels_to_reach_random_final: first label count (linear interpolation) where the "
            "seed-averaged test-MAE curve reaches random's final mean MAE; ratio_to_random divides "
            "it by random's own; None = not reached within the budget. aulc: mean test MAE over "
            "the label range (trapezoid)."
        ),
    }
    path = write_result(name, payload)
    print(f"wrote {path}")
    for strategy, h in summary["headline"].items():
        print(
            f"{strategy:>14}: labels to reach random's final MAE {h['labels_to_reach_random_final']}, "
            f"ratio {h['ratio_to_random']}, AULC ratio {h['aulc_ratio_to_random']:.3f}, "
            f"final MAE {h['final_mae_mean']:.4g} ± {h['final_mae_std']:.2g}"
        )


if __name__ == "__main__":
    main()
