"""The active-learning suite: discovery and learning tasks, each strategy against random sampling.

Every strategy × seed is a real campaign (rules planner, level ``lookup``; see
:mod:`matloop.active_learning.harness`), so what is measured is what the agent runs. ``default`` in a
task's strategy list is the strategy a campaign picks for the task's goal when its spec says
``auto`` (``Campaign.strategy()``).

Discovery tasks (no test split, the whole set is the pool, init 20 random, batch 10): hits at the
budget, recall, enhancement factor over random's hits, acceleration factor (labels uniform random
sampling needs in expectation for the same hits ÷ labels the strategy needed).
Learning tasks (a fixed seeded test split never selectable): labels to reach random's final test
MAE and the ratio to random's with a 90 % bootstrap interval over seeds, AULC ratio, final MAE,
Spearman(|err|, σ) and miscalibration along the curve; the transductive variant (error on the
not-yet-labelled pool) is reported separately.

    python benchmarks/al_suite.py                      # full mode (what counts), resumable
    python benchmarks/al_suite.py --tasks n_max,gap_window
    python benchmarks/al_suite.py --quick              # CI-sized
    python benchmarks/al_suite.py --tasks fe_min --seeds 11,12,13 --data-seed 7   # unseen seeds/split

Writes ``benchmarks/results/al_suite.json`` (``al_suite_quick.json``) and one PNG per task;
campaign directories go to ``--state`` (default under the matloop cache) so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from _common import RESULTS_DIR, git_commit, machine_info, utc_now
from matloop.active_learning.harness import ALConfig, ALData, load_dataset, run_simulation
from matloop.active_learning.summary import stable_classifier
from matloop.agent.spec import default_strategy
from matloop.models.inputs import resolve_backbone
from matloop.settings import get_settings
from matloop.validation.levels import screening_level


@dataclass
class Task:
    """One question of the suite."""

    kind: str  # "discovery" or "learning"
    dataset: str
    target: str
    goal: str
    init: int
    batch: int
    budget: int
    seeds: int | list[int]
    pool: int | None = None
    test: int = 0
    fraction: float | None = None  # discovery: the lowest/highest share of the pool is the target set
    window: tuple[float, float] | None = None
    strategies: list[str] = field(default_factory=lambda: ["default", "random"])
    path: str | None = None  # a file source (the stability benchmark's set)
    references: dict[str, Any] | None = None  # goal "stable": the reference phases' query


#: The stability benchmark's set (``benchmarks/stable_oracle.py``; provenance next to it).
STABLE = Path(__file__).resolve().parent / "data" / "stable_gen"
STABLE_BUDGETS = (100, 200, 400)
STABLE_THRESHOLDS = (0.0, 0.025)  # eV/atom above the oracle hull


FE, GAP = ("mp_formation_energy", "formation_energy_per_atom"), ("mp_dielectric", "band_gap")
TASKS = {
    "fe_min": Task("discovery", *FE, "minimize", 20, 10, 200, 5, fraction=0.05),
    "n_max": Task("discovery", "mp_dielectric", "n", "maximize", 20, 10, 120, 5, fraction=0.05),
    "gap_window": Task("discovery", *GAP, "window", 20, 10, 120, 5, window=(1.1, 1.4)),
    "qm9_gap_min": Task("discovery", "qm9", "gap", "minimize", 20, 10, 300, 5, pool=10_000, fraction=0.02),
    "fe_learn": Task("learning", *FE, "learn", 50, 25, 500, 5, pool=2938, test=1000),
    "gap_learn": Task("learning", *GAP, "learn", 50, 25, 400, 5, pool=756, test=300),
    "n_learn": Task("learning", "mp_dielectric", "n", "learn", 50, 25, 400, 5, pool=756, test=300),
    "qm9_gap_learn": Task("learning", "qm9", "gap", "learn", 100, 50, 1000, 3, pool=10_000, test=2000),
    "stable_gen": Task("discovery", "table", "formation_energy_per_atom", "stable", 20, 20, 400, 5,
                       window=(-np.inf, 1e-6), path=str(STABLE / "stable_gen.json.gz"),
                       references={"source": "table", "path": str(STABLE / "references.json.gz")}),
}  # fmt: skip

#: The surrogate of every campaign of the suite (a small deep ensemble, retrained each round).
MODEL: dict[str, Any] = {
    "method": "ensemble",
    "ensemble_size": 3,
    "hidden": 32,
    "epochs": 60,
    "patience": 10,
    "test_fraction": 0.0,
}
QUICK_MODEL = {**MODEL, "epochs": 6, "patience": 3, "ensemble_size": 2, "hidden": 16}


def surrogate(backbone: str, kind: str, target: str, quick: bool) -> dict[str, Any]:
    """The campaigns' ``model:`` section for items of ``kind``: :data:`MODEL` for the graph network,
    else a bootstrapped ensemble of 5 small MLPs on the frozen backbone's vectors (and, where the
    kind has a screening level that computes the target, its results for the whole pool),
    retrained each round; ``auto`` is
    what a campaign picks (:func:`matloop.models.inputs.resolve_backbone`)."""
    screening = screening_level(kind, target)
    backbone = resolve_backbone(backbone, kind, level_values=screening is not None)
    if backbone == "gnn":
        return QUICK_MODEL if quick else MODEL
    model = {"method": "ensemble", "backbone": backbone, "ensemble_size": 5, "test_fraction": 0.0}
    return model | ({"cheap_level": screening.name} if screening is not None else {})


def quick(task: Task) -> Task:
    """A CI-sized version of a task: small pool and test, few rounds, two seeds."""
    pool = 150 if task.kind == "discovery" else 120
    return replace(
        task, init=10, batch=5, budget=25, seeds=2, pool=None if task.path else pool,
        test=min(task.test, 60), fraction=None if task.window else 0.1,
    )  # fmt: skip


def hit_window(data: ALData, task: Task) -> tuple[float, float] | None:
    """The target set as a window on the target: the task's window, or the lowest/highest
    ``fraction`` of the pool (ties at the threshold included)."""
    if task.window is not None or task.fraction is None:
        return task.window
    y = np.sort(data.y[data.pool])
    k = max(1, round(task.fraction * len(y)))
    if task.goal == "minimize":
        return (-np.inf, float(y[k - 1]))
    return (float(y[-k]), np.inf)


def run_task(
    name: str,
    task: Task,
    state: Path,
    backbone: str,
    quick: bool,
    stem: str,
    data_seed: int = 0,
    cheap_arm: bool | str = "auto",
) -> dict[str, Any]:
    start = time.perf_counter()
    data = load_dataset(
        task.dataset,
        task.target,
        pool_size=task.pool,
        test_size=task.test,
        data_seed=data_seed,
        path=task.path,
    )
    if task.goal == "stable":  # a partial oracle set: the budget fits the pool (stated in the result)
        task = replace(task, budget=min(task.budget, len(data.pool) // 2))
    model = surrogate(backbone, data.source.kind if data.source else "", task.target, quick)
    window = hit_window(data, task)
    default = default_strategy(task.goal)  # type: ignore[arg-type]
    strategies = [default if s == "default" else s for s in task.strategies]
    config = ALConfig(
        strategies=list(dict.fromkeys(strategies)),
        init=task.init,
        batch=task.batch,
        rounds=(task.budget - task.init) // task.batch,
        seeds=task.seeds,
        goal=task.goal,  # type: ignore[arg-type]
        window=window,
        model=model,
        references=task.references,
        cheap_arm=cheap_arm,
    )
    logging.info(
        "%s: pool %d, test %d, strategies %s", name, len(data.pool), len(data.test), config.strategies
    )
    summary = run_simulation(data, config, state / name)
    png = RESULTS_DIR / f"{stem}_{name}.png"
    shutil.copyfile(state / name / "learning_curve.png", png)
    rows = {s: _row(task, h) for s, h in summary["headline"].items()}
    return {
        "kind": task.kind,
        "dataset": task.dataset,
        "target": task.target,
        "unit": data.unit,
        "goal": task.goal,
        "default_strategy": default,
        "model": model,
        "config": {
            **asdict(config),
            "pool_size": len(data.pool),
            "test_size": len(data.test),
            "data_seed": data_seed,
        },
        "target_set_size": summary["headline"].get("random", {}).get("discovery", {}).get("target_set_size"),
        "seeds": config.seed_list,
        "strategies": rows,
        "transductive": {s: h.get("transductive") for s, h in summary["headline"].items()}
        if task.kind == "learning"
        else None,
        "curves": summary["curves"],
        "seconds": round(time.perf_counter() - start, 1),
        "campaign_seconds": round(sum(c["seconds"]["wall"] for c in summary["curves"].values()), 1),
        "plot": png.name,
        **(
            {"stability": stability_rows(data, state / name, config, summary["curves"])}
            if task.goal == "stable"
            else {}
        ),
    }


def stability_rows(data: ALData, root: Path, config: ALConfig, curves: dict[str, Any]) -> dict[str, Any]:
    """Hits (distance to the oracle hull ≤ 0 and ≤ 25 meV/atom) after 100/200/400 labels for the
    loop and random selection (the campaigns, mean ± std over seeds), random's expectation, and
    screen-only: the pool ranked by the screening level's own hull distance, the top B labelled
    (no learning). Also the screen as a classifier of "stable" on the whole pool, and every round's
    surrogate on the unlabelled remainder (precision, recall, F1, DAF = precision / prevalence, as
    matbench-discovery reports them; ``curves``: the simulation's)."""
    from matloop.agent.state import CampaignState
    from matloop.workspace import Workspace

    source = data.source
    assert source is not None
    pool = [data.ids[i] for i in data.pool]
    pool_ids = set(pool)
    column = {
        c: dict(zip(source.ids, source.target(c), strict=True))
        for c in ("e_above_hull", "e_above_hull_static")
    }
    oracle = np.array([column["e_above_hull"][i] for i in pool])
    screen = np.array([column["e_above_hull_static"][i] for i in pool])
    acquired = config.init + config.batch * config.rounds
    budgets = sorted({*(b for b in STABLE_BUDGETS if b <= acquired), acquired})
    out: dict[str, Any] = {"pool": len(pool), "budgets": budgets, "thresholds_eV": list(STABLE_THRESHOLDS)}
    ranked = np.argsort(screen, kind="stable")
    for t in STABLE_THRESHOLDS:
        truth = oracle <= t + 1e-6
        n_true = int(truth.sum())
        row: dict[str, Any] = {"stable_in_pool": n_true, "prevalence": round(n_true / len(pool), 4),
                               "ef_ceiling": round(len(pool) / max(n_true, 1), 2)}  # fmt: skip
        screen_scores = stable_classifier(screen, oracle, threshold=t + 1e-6)
        row["screen_classifier"] = {
            k: round(screen_scores[k], 3) for k in ("precision", "recall", "f1", "daf")
        }
        hit_ids = {pool[k] for k in np.flatnonzero(truth)}
        for b in budgets:
            screen_hits = int(truth[ranked[:b]].sum())
            random_expected = b * n_true / len(pool)
            cell: dict[str, Any] = {"random_expected": round(random_expected, 2), "screen_only": screen_hits}
            for strategy in config.strategies:
                hits = []
                for seed in config.seed_list:
                    state = CampaignState(
                        Workspace(root / strategy / f"seed_{seed}", settings=get_settings())
                    )
                    labels = state.labels(data.target, "lookup")
                    order = [lb["item_id"] for lb in labels if lb["item_id"] in pool_ids]
                    hits.append(sum(i in hit_ids for i in order[:b]))
                mean = float(np.mean(hits))
                cell[strategy] = {
                    "hits_mean": round(mean, 2), "hits_std": round(float(np.std(hits)), 2),
                    "recall": round(mean / max(n_true, 1), 3),
                    "ef_vs_random": round(mean / random_expected, 2) if random_expected else None,
                    "ratio_vs_screen_only": round(mean / screen_hits, 2) if screen_hits else None,
                }  # fmt: skip
            row[str(b)] = cell
        out[f"e_hull<={t}"] = row
    out["surrogate_classifier"] = {  # each round's model on the unlabelled remainder, mean over seeds
        strategy: {"labels": curve["labels"], **curve["stable_classifier"]}
        for strategy, curve in curves.items()
        if "stable_classifier" in curve
    }
    return out


def _row(task: Task, headline: dict[str, Any]) -> dict[str, Any]:
    if task.kind == "discovery":
        return headline["discovery"]
    t = headline["test"]
    return {
        "final_mae_mean": t["final_mae_mean"],
        "final_mae_std": t["final_mae_std"],
        "labels_to_random_final_mean": t["labels_to_reach_random_final"],
        "labels_ratio": t["labels_ratio"],
        "labels_ratio_ci90": t["labels_ratio_ci90"],
        "aulc_ratio": t["aulc_ratio"],
        "spearman_mean": t["spearman_mean"],
        "miscalibration_mean": t["miscalibration_mean"],
    }


def overhead(state: Path) -> dict[str, float]:
    """Share of the campaigns' round wall time spent outside the tools (workspace, SQLite,
    decision log, planner), from the decision logs of the campaigns under ``state`` (one task's,
    or every task's)."""
    wall = tools = 0.0
    for path in state.rglob("summary.json"):
        for curve in json.loads(path.read_text())["curves"].values():
            wall += curve["seconds"]["wall"]
            tools += curve["seconds"]["in_tools"]
    return {"round_wall_s": round(wall, 1), "in_tools_s": round(tools, 1),
            "outside_tools_fraction": round(1 - tools / wall, 4) if wall else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized run.")
    parser.add_argument("--tasks", default=",".join(TASKS), help="Comma-separated task names.")
    parser.add_argument("--state", type=Path, default=None, help="Directory of the resumable campaigns.")
    parser.add_argument("--table", action="store_true", help="Print the results as a table, run nothing.")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="A count (seeds 0..N-1; fewer than the protocol's is reported) or a list such as 11,12,13.",
    )
    parser.add_argument("--data-seed", type=int, default=0, help="Seed of the pool/test split.")
    parser.add_argument(
        "--strategies", default=None, help="Strategies instead of the task's ('default' allowed)."
    )
    parser.add_argument(
        "--cheap-arm",
        choices=("auto", "true", "false"),
        default="auto",
        help="The campaigns' cheap_arm (not auto → results in al_suite_cheap_arm_<value>.json).",
    )
    parser.add_argument(
        "--backbone",
        default="auto",
        help="Surrogate backbone (auto: as campaigns pick it, or one of models.inputs.BACKBONES → results "
        "in al_suite_<backbone>.json).",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("matloop.models", "matloop.data", "matloop.tools", "matloop.agent"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    mode = "quick" if args.quick else "full"
    name = "al_suite" + ("_quick" if args.quick else "")
    if args.backbone != "auto":
        name += "_" + args.backbone.replace("+", "_")
    if args.cheap_arm != "auto":
        name += f"_cheap_arm_{args.cheap_arm}"
    if args.data_seed or isinstance(args.seeds, list):  # other seeds or split: files of their own
        name += f"_split{args.data_seed}_seeds{'-'.join(map(str, _seed_list(args.seeds or 5)))}"
    state = args.state or get_settings().cache_dir / "benchmarks" / name
    out = RESULTS_DIR / f"{name}.json"
    result = json.loads(out.read_text()) if out.exists() else {"tasks": {}}
    if args.table:
        print(markdown_table(result))
        return
    for task_name in [t for t in args.tasks.split(",") if t]:
        task = quick(TASKS[task_name]) if args.quick else TASKS[task_name]
        if args.strategies:
            task = replace(task, strategies=args.strategies.split(","))
        protocol_seeds = len(_seed_list(task.seeds))
        if args.seeds:
            task = replace(task, seeds=args.seeds)
        cheap_arm = {"true": True, "false": False}.get(args.cheap_arm, "auto")
        result["tasks"][task_name] = run_task(
            task_name, task, state, args.backbone, args.quick, name, args.data_seed, cheap_arm
        )
        result["tasks"][task_name]["seeds_of_protocol"] = protocol_seeds
        result["tasks"][task_name]["overhead"] = overhead(state / task_name)
        # each task keeps the commit and date it finished at: a rerun of some tasks keeps the others
        result["tasks"][task_name] |= {"git_commit": git_commit(), "date_utc": utc_now()}
        result.update(
            git_commit=git_commit(),
            machine=machine_info(),
            mode=mode,
            command="python benchmarks/al_suite.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            backbone=args.backbone,
            overhead=overhead(state),
            date_utc=utc_now(),
        )
        out.write_text(json.dumps(result, indent=1, default=_json) + "\n")
        _print(task_name, result["tasks"][task_name])
    print(f"wrote {out}")


def _seeds(text: str) -> int | list[int]:
    """``--seeds``: a count (``5``) or a comma-separated list of seeds (``11,12,13``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or seeds such as 11,12,13, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 and "," not in text else values


def _seed_list(seeds: int | list[int]) -> list[int]:
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def markdown_table(result: dict[str, Any]) -> str:
    """The headline figures of every task as a markdown table (the README's)."""
    rows = ["| task | strategy | figures vs random |", "|---|---|---|"]
    for name, task in result["tasks"].items():
        for strategy, r in task["strategies"].items():
            mark = " (default)" if strategy == task["default_strategy"] else ""
            if task["kind"] == "discovery":
                figures = (
                    f"hits {r['hits_mean']:.1f} ± {r['hits_std']:.1f} of {r['target_set_size']}, "
                    f"recall {r['recall']:.2f}, EF {r['enhancement_factor']:.1f}, "
                    f"AF {_fmt(r['acceleration_factor'])}"
                )
            else:
                ratio, (lo, hi) = r["labels_ratio"], r["labels_ratio_ci90"]
                figures = (
                    f"final MAE {r['final_mae_mean']:.3g} ± {r['final_mae_std']:.2g}, labels ratio "
                    f"{_fmt(ratio)} (90 % CI {_fmt(lo)}–{_fmt(hi)}), AULC ratio {r['aulc_ratio']:.3f}"
                )
            if len(task["seeds"]) < task.get("seeds_of_protocol", len(task["seeds"])):
                figures += f" ({len(task['seeds'])} of {task['seeds_of_protocol']} seeds)"
            rows.append(f"| {name} | {strategy}{mark} | {figures} |")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def _json(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    return str(obj)


def _print(name: str, task: dict[str, Any]) -> None:
    for strategy, row in task["strategies"].items():
        figures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
        print(f"{name:>14} {strategy:>14}: {figures}")


if __name__ == "__main__":
    main()
