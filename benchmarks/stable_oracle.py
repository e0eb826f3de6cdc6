"""Oracle labels of the stability benchmark (``stable_gen`` in ``al_suite.py``), computed once.

The pool: every candidate that data-mined ion substitution (:mod:`matloop.data.substitution`)
makes from the bundled ``mp_formation_energy`` templates of at most ``MAX_SITES`` sites into the
fixed element set :data:`ELEMENTS`, threshold :data:`THRESHOLD`. Reference phases: the elements
and every bundled ``mp_formation_energy`` phase (≤ ``MAX_REF_SITES`` sites) made of those
elements. Two levels, on purpose different:

- oracle = the project's ``chgnet`` level: its atomate2 Maker
  ``ForceFieldRelaxMaker(force_field_name="CHGNet", steps=300)`` (cell relaxed, fmax 0.1 eV/Å),
  formation energy against elemental references relaxed by the same Maker (gases in a box with
  the cell fixed); items whose forces do not converge fail at that level and leave the pool;
- screen = the ``chgnet_static`` level: one CHGNet single point of the unrelaxed candidate,
  computed when the set is assembled (``stable_gen.py``), by the level's own code.

This is the funnel as it is used in practice: an MLIP single point on the raw substituted
structure ranks the pool, the relaxation (here CHGNet, on a cluster DFT) decides.

Resumable: one JSON line per item appended to ``benchmarks/data/stable_gen/labels.jsonl``
(references first, then the candidates in a seeded random order, so any prefix of the file is a
uniform random sample of the pool); a restart skips the ids already there. One thread.

    OMP_NUM_THREADS=1 nohup nice -n 10 python benchmarks/stable_oracle.py > oracle.log 2>&1 &
    python benchmarks/stable_oracle.py --pool-only     # write pool.parquet, count, exit
    python benchmarks/stable_oracle.py --assemble      # labels so far -> the bundled set

``--assemble`` turns the labels written so far into ``stable_gen.parquet`` (the candidates
labelled at the oracle level, unrelaxed structures; columns: formation energy at the oracle
level, formation energy at the screening level, energy above the oracle hull of references ∪
every labelled candidate), ``references.json`` (the reference phases' oracle formation
energies) and ``SHA256SUMS``, with the provenance in ``PROVENANCE.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "stable_gen"
LABELS = DATA_DIR / "labels.jsonl"
POOL = DATA_DIR / "pool.parquet"
#: The chemical spaces: every system made of these elements (alkali / alkaline-earth / p-block
#: cations with the common anions).
ELEMENTS = ("Li", "Na", "K", "Mg", "Ca", "Sr", "Ba", "Zn", "Al", "Ga", "Si", "O", "S", "N", "F", "Cl", "Br")
THRESHOLD = 1e-4
MAX_SITES = 10
MAX_REF_SITES = 24
ORDER_SEED = 7
#: ``ForceFieldRelaxMaker(force_field_name="CHGNet", steps=300)``: the ``chgnet`` level.
LEVEL_STEPS = 300


def build_pool():
    """The candidate table and the reference table (bundled phases made of ELEMENTS)."""
    from matloop.data.bundled import load_bundled
    from matloop.data.substitution import generate_substitutions

    templates = load_bundled("mp_formation_energy")
    pool, counts = generate_substitutions(templates, ELEMENTS, threshold=THRESHOLD, max_sites=MAX_SITES)
    allowed = set(ELEMENTS)
    refs = [
        i
        for i, sp in enumerate(templates.frame["species"])
        if set(sp) <= allowed and len(sp) <= MAX_REF_SITES and len(set(sp)) > 1
    ]
    return pool, counts, templates.to_slice(refs, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-only", action="store_true", help="write the pool table, print counts, exit")
    parser.add_argument("--assemble", action="store_true", help="build the benchmark set from the labels")
    args = parser.parse_args()
    if args.assemble:
        return assemble()
    import torch

    torch.set_num_threads(1)
    from matloop.data.table import write_table

    start = time.perf_counter()
    pool, counts, refs = build_pool()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    write_table(pool, POOL)
    print(f"pool {len(pool)} candidates, {len(refs)} reference phases, {time.perf_counter() - start:.0f} s; "
          f"{counts.model_dump()}", flush=True)  # fmt: skip
    if args.pool_only:
        return
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from pymatgen.core import Composition

    from matloop.data.references import reference_structure

    maker = ForceFieldRelaxMaker(force_field_name="CHGNet", steps=LEVEL_STEPS)
    os.chdir(tempfile.mkdtemp())  # the relaxer writes final_atoms_object.xyz into the working directory
    done = set()
    if LABELS.exists():
        done = {json.loads(line)["id"] for line in LABELS.read_text().splitlines() if line.strip()}
    work: list[tuple[str, str, object, bool]] = []
    for el in ELEMENTS:
        structure, relax_cell = reference_structure(el)
        work.append((f"element-{el}", "element", structure, relax_cell))
    work += [(i, "reference", s, True) for i, s in zip(refs.ids, refs.structures, strict=True)]
    order = np.random.default_rng(ORDER_SEED).permutation(len(pool))
    slice_ = pool.to_slice()
    work += [(slice_.ids[k], "candidate", slice_.structures[k], True) for k in order]
    todo = [w for w in work if w[0] not in done]
    print(f"{len(done)} done, {len(todo)} to go", flush=True)
    with LABELS.open("a") as out:
        for n, (item_id, role, structure, relax_cell) in enumerate(todo, 1):
            t0 = time.perf_counter()
            record = {"id": item_id, "role": role, "formula": Composition(structure.composition).formula,
                      "nsites": len(structure)}  # fmt: skip
            try:
                record |= _relax(structure, relax_cell, maker)
            except Exception as exc:  # the level fails this item: recorded, never retried
                record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            record["seconds"] = round(time.perf_counter() - t0, 2)
            out.write(json.dumps(record) + "\n")
            out.flush()
            if n % 20 == 0 or n == len(todo):
                print(f"{time.strftime('%H:%M:%S')} {len(done) + n}/{len(work)} ({role}) "
                      f"last {record['seconds']} s", flush=True)  # fmt: skip


def _relax(structure, relax_cell: bool, maker) -> dict:
    """The ``chgnet`` level's relaxation (its atomate2 Maker, calculator loaded once)."""
    from dataclasses import replace

    result = (maker if relax_cell else replace(maker, relax_cell=False)).run_ase(structure)
    final = result.final_mol_or_struct
    return {
        "e_relaxed": float(result.trajectory.frame_properties[-1]["energy"]) / len(final),
        "converged": bool(result.is_force_converged),
        "volume_ratio": round(final.volume / structure.volume, 4),
    }


def _records() -> list[dict]:
    return [json.loads(line) for line in LABELS.read_text().splitlines() if line.strip()]


def assemble() -> None:
    """The benchmark set from the labels so far (see the module docstring)."""
    import hashlib
    from collections import Counter

    from pymatgen.core import Composition

    from matloop.data.table import read_table, write_table
    from matloop.models.cheap_level import chgnet_static
    from matloop.settings import get_settings
    from matloop.stability import Hull, Phase

    records = [r for r in _records() if "error" not in r and r.get("converged")]
    failed = len(_records()) - len(records)
    mu = {r["id"].removeprefix("element-"): r["e_relaxed"] for r in records if r["role"] == "element"}
    missing = sorted(set(ELEMENTS) - set(mu))
    if missing:
        raise SystemExit(f"elements: expected every elemental reference labelled, missing {missing}")

    def formation(r: dict) -> float:
        comp = Composition(r["formula"])
        return r["e_relaxed"] - sum(mu[el.symbol] * x for el, x in comp.fractional_composition.items())

    refs = [
        Phase(r["id"], r["formula"], formation(r), reference=True)
        for r in records
        if r["role"] == "reference"
    ]
    cands = {r["id"]: Phase(r["id"], r["formula"], formation(r)) for r in records if r["role"] == "candidate"}
    hull = Hull("chgnet", refs, cands.values())
    scores = {s.item_id: s for s in hull.stability()}
    pool = read_table(POOL)
    keep = [i for i, item in enumerate(pool.ids) if item in cands]
    data = pool.to_slice(keep, [])
    structures = list(data.structures)
    _, static, _ = chgnet_static(structures, get_settings().cache_dir / "embeddings.sqlite")
    frame = pool.frame.iloc[keep].reset_index(drop=True)
    frame["formation_energy_per_atom"] = [cands[i].formation_energy_per_atom for i in data.ids]
    frame["formation_energy_static"] = np.asarray(static, dtype=np.float64)
    frame["e_above_hull"] = [scores[i].e_above_hull for i in data.ids]
    frame["e_above_references"] = [scores[i].e_above_references for i in data.ids]
    units = {c: "eV/atom" for c in frame.columns if c not in ("id", "species", "coords", "lattice")}
    from matloop.data.table import SourceTable

    table = SourceTable(
        frame, units, "crystal", "stable_gen", {"levels": {"oracle": "chgnet", "screen": "chgnet_static"}}
    )
    write_table(table, DATA_DIR / "stable_gen.parquet")
    (DATA_DIR / "references.json").write_text(
        json.dumps(
            {
                "elements_eV_per_atom": mu,
                "phases": {p.item_id: [p.formula, p.formation_energy_per_atom] for p in refs},
            },
            indent=1,
        )
    )
    stable = int(np.sum(frame["e_above_hull"] <= 1e-6))
    near = int(np.sum(frame["e_above_hull"] <= 0.025))
    provenance = {
        "pool": {"templates": "mp_formation_energy (bundled)", "elements": ELEMENTS,
                 "threshold": THRESHOLD, "max_template_sites": MAX_SITES, "candidates": len(pool),
                 "order_seed": ORDER_SEED},
        "references": {"count": len(refs), "max_sites": MAX_REF_SITES,
                       "source": "mp_formation_energy (bundled)"},
        "oracle": "chgnet level: atomate2 ForceFieldRelaxMaker(force_field_name='CHGNet', steps=300)",
        "screen": "chgnet_static level (matloop.models.cheap_level.chgnet_static) on the unrelaxed candidate",
        "labelled_candidates": len(frame),
        "failed_or_unconverged": failed,
        "stable": stable,
        "within_25meV": near,
        "prevalence_stable": round(stable / len(frame), 4),
        "prevalence_25meV": round(near / len(frame), 4),
        "chemical_systems_without_reference_phases": sorted(
            {s for s in (Composition(p.formula).chemical_system for p in cands.values())
             if hull.completeness(s.split("-")) == 0}
        ),
    }  # fmt: skip
    (DATA_DIR / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    sums = [
        f"{hashlib.sha256((DATA_DIR / f).read_bytes()).hexdigest()}  {f}"
        for f in ("stable_gen.parquet", "references.json", "labels.jsonl", "pool.parquet")
    ]
    (DATA_DIR / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(
        json.dumps({k: v for k, v in provenance.items() if k != "chemical_systems_without_reference_phases"})
    )
    print(Counter(len(Composition(p.formula).elements) for p in cands.values()))


if __name__ == "__main__":
    sys.exit(main())
