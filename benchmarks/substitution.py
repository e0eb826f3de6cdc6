"""How fast data-mined ion substitution generates candidates (:mod:`matloop.data.substitution`).

Generates from the bundled ``mp_formation_energy`` templates into a wide element set (the
target is ≥ 10,000 candidates in a few minutes on 2 cores) and writes the time, the counts
(generated, rejected and why, duplicates, known phases) and the time per candidate.

    python benchmarks/substitution.py            # full: 26 elements, templates ≤ 20 sites
    python benchmarks/substitution.py --quick    # 8 elements, templates ≤ 8 sites
"""

from __future__ import annotations

import argparse
import logging
import time

from _common import write_result
from matloop.data.bundled import load_bundled
from matloop.data.substitution import generate_substitutions

FULL = {
    "elements": [
        "Li",
        "Na",
        "K",
        "Rb",
        "Cs",
        "Mg",
        "Ca",
        "Sr",
        "Ba",
        "Zn",
        "Cd",
        "Al",
        "Ga",
        "In",
        "Si",
        "Ge",
        "Sn",
        "Ti",
        "Zr",
        "O",
        "S",
        "Se",
        "N",
        "F",
        "Cl",
        "Br",
    ],
    "threshold": 1e-4,
    "max_sites": 20,
}
QUICK = {"elements": ["Li", "Na", "Mg", "Ca", "Al", "O", "S", "F"], "threshold": 1e-3, "max_sites": 8}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = QUICK if args.quick else FULL
    templates = load_bundled("mp_formation_energy")
    start = time.perf_counter()
    table, counts = generate_substitutions(templates, **config)
    seconds = time.perf_counter() - start
    path = write_result(
        "substitution_quick" if args.quick else "substitution",
        {
            "config": config,
            "templates": "mp_formation_energy",
            "seconds": round(seconds, 1),
            "candidates": len(table),
            "ms_per_candidate": round(1000 * seconds / len(table), 2),
            "counts": counts.model_dump(),
        },
    )
    print(f"{len(table)} candidates in {seconds:.0f} s -> {path}")


if __name__ == "__main__":
    main()
