"""Why the stability campaign ranks as it does: the two findings behind its selection, measured on
the stability benchmark's set (``al_suite.py`` task ``stable_gen``) with development seeds
100–104, never the benchmark's.

1. *Candidates compete.* The screen's formation energies (CHGNet single points) ranked against
   the hull of the reference phases alone, and against the hull of the references and every
   screened candidate (:meth:`matloop.stability.Hull.predicted_distance`, what selection ranks):
   stable crystals in the top 20 / 50 / 100 / 200 / 400.
2. *The learned correction against the screen plus a constant.* The relaxation energy the
   surrogate learns (oracle − screen formation energy), binned by the screen's own hull distance;
   then heads trained on it from n random labels (n = 20 / 60 / 100 / 200, seeds 100–104: the MLP
   ensemble and the GP on the campaign's CHGNet+Magpie vectors and the screen's values) against
   the screen plus the mean of the training corrections: stable crystals in the top 20 / 50 / 100
   of the remainder, each ranked on the predicted hull of the references, the training labels
   and the remainder's predictions.

    python benchmarks/stable_rankings.py      → benchmarks/results/stable_rankings.json
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _common import write_result
from matloop.active_learning.harness import level_workspace, load_dataset
from matloop.models.inputs import delta_column, surrogate_inputs
from matloop.models.vector_uq import fit_vector_model
from matloop.settings import get_settings
from matloop.stability import Hull, Phase
from matloop.validation.level_values import with_level_values

DATA = Path(__file__).resolve().parent / "data" / "stable_gen"
SEEDS = range(100, 105)
LABELS = (20, 60, 100, 200)
HEADS = ("mlp_ensemble", "gp")
BINS = [(-np.inf, 0.0), (0.0, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.0), (1.0, np.inf)]  # eV/atom


def top_hits(score: np.ndarray, positions: np.ndarray, truth: np.ndarray, ks: tuple[int, ...]) -> list[int]:
    """Stable crystals among the best-scored ``ks`` of ``positions``."""
    order = positions[np.argsort(score, kind="stable")]
    return [int(truth[order[:k]].sum()) for k in ks]


def main() -> None:
    target = "formation_energy_per_atom"
    data = load_dataset("table", target, path=str(DATA / "stable_gen.json.gz"), pool_size=None, test_size=0)
    refs = load_dataset("table", target, path=str(DATA / "references.json.gz"), test_size=0).source
    references = [
        Phase(i, s.composition.formula, float(e), reference=True)
        for i, s, e in zip(refs.ids, refs.structures, refs.target(target), strict=True)
    ]
    source = data.source
    pool = np.asarray(data.pool)
    ids = [data.ids[i] for i in pool]
    column = {c: dict(zip(source.ids, source.target(c), strict=True)) for c in source.properties.columns}
    formula = {i: s.composition.formula for i, s in zip(source.ids, source.structures, strict=True)}
    formulas = [formula[i] for i in ids]
    oracle = data.y[pool]
    truth = np.array([column["e_above_hull"][i] <= 1e-6 for i in ids])
    screen_distance = np.array([column["e_above_hull_static"][i] for i in ids])

    level = "chgnet_static"
    items = data.items(pool, get_settings().cache_dir)
    state = get_settings().cache_dir / "benchmarks" / "stable_rankings"
    items = with_level_values(items, ids, level_workspace(data, level, state), level)
    x, screen = surrogate_inputs(
        "chgnet+magpie", items, items.level_columns, delta_column(target, items.level_columns)
    )
    usable = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(screen))
    correction = oracle - screen

    def predicted_distance(known: list[Phase], positions: np.ndarray, mu: np.ndarray) -> np.ndarray:
        hull = Hull("oracle", references, known)
        return hull.predicted_distance(
            [Phase(ids[k], formulas[k], float(m)) for k, m in zip(positions, mu, strict=True)]
        )

    reference_hull = Hull("oracle", references)
    ks = (20, 50, 100, 200, 400)
    competition = {
        "against_references_only": top_hits(
            reference_hull.distance([formulas[k] for k in usable], screen[usable]), usable, truth, ks
        ),
        "against_the_predicted_hull": top_hits(
            predicted_distance([], usable, screen[usable]), usable, truth, ks
        ),
        "screen_own_hull": top_hits(screen_distance[usable], usable, truth, ks),
        "top": list(ks),
    }
    bins = []
    for lo, hi in BINS:
        inside = usable[(screen_distance[usable] > lo) & (screen_distance[usable] <= hi)]
        stats = {
            "mean": round(float(correction[inside].mean()), 3),
            "std": round(float(correction[inside].std()), 3),
        }
        row = {"screen_e_above_hull_eV": [lo, hi], "items": len(inside), "stable": int(truth[inside].sum())}
        bins.append(row | {"correction": stats})
    heads: dict[str, dict[str, list[float]]] = {}
    for n in LABELS:
        rows: dict[str, list[list[int]]] = {}
        for seed in SEEDS:
            train = np.random.default_rng(seed).choice(usable, n, replace=False)
            rest = np.setdiff1d(usable, train)
            known = [Phase(ids[k], formulas[k], float(oracle[k])) for k in train]
            mu = {"screen_plus_constant": screen[rest] + correction[train].mean()}
            for head in HEADS:
                model = fit_vector_model(
                    x[train], correction[train], x[:0], correction[:0], method=head, seed=seed
                )
                mu[head] = screen[rest] + model.predict(x[rest]).mean
            for name, m in mu.items():
                rows.setdefault(name, []).append(
                    top_hits(predicted_distance(known, rest, m), rest, truth, (20, 50, 100))
                )
        heads[str(n)] = {name: np.mean(v, axis=0).round(1).tolist() for name, v in rows.items()}
        print(n, heads[str(n)], flush=True)
    path = write_result(
        "stable_rankings",
        {
            "pool": len(usable),
            "stable": int(truth[usable].sum()),
            "seeds": list(SEEDS),
            "competition_top_hits": competition,
            "correction_by_screen_distance": bins,
            "correction_overall": {
                "mean": round(float(correction[usable].mean()), 3),
                "std": round(float(correction[usable].std()), 3),
            },
            "learned_vs_constant_top_20_50_100": heads,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
