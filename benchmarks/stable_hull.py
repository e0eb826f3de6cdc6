"""Hull update plus selection per round over ≥ 10,000 candidates (:mod:`matloop.stability`).

The pool is the substitution pool of ``benchmarks/substitution.py`` (26 elements); reference
phases are the bundled ``mp_formation_energy`` phases made of those elements, at their MP
formation energies. Each round a new model's predictions μ (the reference-hull energy at the
composition plus Gaussian noise N(0.1, 0.1) eV/atom, seeded per round) are scored as selection
scores them — the distance to the hull of the labelled phases and every candidate's prediction
(:meth:`Hull.predicted_distance`) — then the 10 of lowest distance are labelled (their "label" =
μ) and the hull updated (:meth:`Hull.with_candidates`). The baseline, measured in the same run,
is pymatgen's ``PhaseDiagram.get_hull_energy_per_atom`` called per composition (on 1,000
candidates, scaled to the pool).

    python benchmarks/stable_hull.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
from pymatgen.core import Composition

from _common import write_result
from matloop.data.bundled import load_bundled
from matloop.data.sources import load_table
from matloop.data.substitution import SubstitutionQuery
from matloop.stability import Hull, Phase
from substitution import FULL

BATCH = 10
BASELINE_ITEMS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    pool = load_table("substitution", substitution=SubstitutionQuery(**FULL))
    formulas = [Composition(Counter(sp)).formula for sp in pool.frame["species"]]
    mp = load_bundled("mp_formation_energy")
    allowed = set(FULL["elements"])
    refs = [
        Phase(i, Composition(Counter(sp)).formula, float(fe), reference=True)
        for i, sp, fe in zip(
            mp.frame["id"], mp.frame["species"], mp.frame["formation_energy_per_atom"], strict=True
        )
        if set(sp) <= allowed and len(set(sp)) > 1
    ]
    hull = Hull("mp", references=refs)
    start = time.perf_counter()
    at_hull = hull.energy(formulas)
    cold = time.perf_counter() - start
    labelled = np.zeros(len(formulas), dtype=bool)
    rounds = []
    for r in range(args.rounds):
        mu = at_hull + np.random.default_rng(r).normal(0.1, 0.1, len(formulas))
        t0 = time.perf_counter()
        d = hull.predicted_distance(
            [Phase(i, f, float(m)) for i, f, m in zip(pool.ids, formulas, mu, strict=True)]
        )
        d[labelled] = np.inf
        picks = np.argpartition(d, BATCH)[:BATCH]
        labelled[picks] = True
        hull = hull.with_candidates([Phase(pool.ids[k], formulas[k], float(mu[k])) for k in picks], "mp")
        rounds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    sample = formulas[:BASELINE_ITEMS]
    for f in sample:
        hull.diagram([el.symbol for el in Composition(f).elements]).get_hull_energy_per_atom(Composition(f))
    baseline = (time.perf_counter() - t0) * len(formulas) / len(sample)
    systems = len({frozenset(Composition(f).chemical_system.split("-")) for f in formulas})
    path = write_result(
        "stable_hull",
        {
            "pool": len(formulas),
            "chemical_systems": systems,
            "references": len(refs),
            "batch": BATCH,
            "seed": 0,
            "first_scoring_s": round(cold, 2),
            "round_s": [round(r, 3) for r in rounds],
            "round_s_mean": round(float(np.mean(rounds)), 3),
            "baseline_per_composition_pymatgen_s": round(baseline, 1),
            "speedup_vs_baseline": round(baseline / float(np.mean(rounds)), 1),
            "target": "hull update + selection over >= 10,000 candidates <= 10 s per round on 2 cores",
        },
    )
    print(f"{len(formulas)} candidates, {systems} systems: first {cold:.1f} s, "
          f"rounds {np.round(rounds, 2)} s, "
          f"pymatgen per composition {baseline:.0f} s -> {path}")  # fmt: skip


if __name__ == "__main__":
    main()
