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
uniform random sample of the pool); a restart skips the ids already there. One thread; ``--part
K/N`` splits what is left between N runs started together (every N-th remaining item).

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
import pandas as pd

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
    """The candidate table, its generation counts and the reference phases."""
    from matloop.data.bundled import load_bundled
    from matloop.data.substitution import generate_substitutions

    templates = load_bundled("mp_formation_energy")
    pool, counts = generate_substitutions(templates, ELEMENTS, threshold=THRESHOLD, max_sites=MAX_SITES)
    return pool, counts, reference_slice()


def reference_slice():
    """The known phases: every bundled Materials Project structure (the four sets, each id once)
    made of two or more of ELEMENTS, with at most MAX_REF_SITES sites."""
    from matloop.data.bundled import BUNDLED, load_bundled
    from matloop.data.slices import DatasetSlice

    allowed, seen = set(ELEMENTS), set()
    ids, structures = [], []
    for name in BUNDLED:
        table = load_bundled(name)
        keep = [
            k
            for k, (i, sp) in enumerate(zip(table.ids, table.frame["species"], strict=True))
            if set(sp) <= allowed and len(sp) <= MAX_REF_SITES and len(set(sp)) > 1 and i not in seen
        ]
        part = table.to_slice(keep, [])
        seen.update(part.ids)
        ids += part.ids
        structures += list(part.structures)
    return DatasetSlice(ids, structures, pd.DataFrame(index=ids), {}, "crystal", "references")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool-only", action="store_true", help="write the pool table, print counts, exit")
    parser.add_argument("--assemble", action="store_true", help="build the benchmark set from the labels")
    parser.add_argument(
        "--part", default="1/1", help="K/N: label every N-th remaining item from the K-th (parallel runs)"
    )
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
    part, parts = map(int, args.part.split("/"))
    todo = [w for w in work if w[0] not in done][part - 1 :: parts]
    print(f"{len(done)} done, {len(todo)} to go", flush=True)
    for n, (item_id, role, structure, relax_cell) in enumerate(todo, 1):
        t0 = time.perf_counter()
        record = {"id": item_id, "role": role, "formula": Composition(structure.composition).formula,
                  "nsites": len(structure)}  # fmt: skip
        try:
            record |= _relax(structure, relax_cell, maker)
        except Exception as exc:  # the level fails this item: recorded, never retried
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
        record["seconds"] = round(time.perf_counter() - t0, 2)
        with LABELS.open("a") as out:  # opened per line: a file replaced under a long run loses nothing
            out.write(json.dumps(record) + "\n")
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

    from pymatgen.core import Composition

    from matloop.data.table import read_table
    from matloop.models.cheap_level import chgnet_static
    from matloop.settings import get_settings
    from matloop.stability import Hull, Phase

    everything = _records()
    records = [r for r in everything if "error" not in r and r.get("converged")]
    mu = {r["id"].removeprefix("element-"): r["e_relaxed"] for r in records if r["role"] == "element"}
    if missing := sorted(set(ELEMENTS) - set(mu)):
        raise SystemExit(f"elements: expected every elemental reference labelled, missing {missing}")

    def formation(r: dict) -> float:
        comp = Composition(r["formula"])
        return r["e_relaxed"] - sum(mu[el.symbol] * x for el, x in comp.fractional_composition.items())

    by_id = {r["id"]: r for r in records if r["role"] in ("reference", "candidate")}
    refs = reference_slice()
    pool = read_table(POOL)
    structures = {i: s for i, s in zip(refs.ids, refs.structures, strict=True) if i in by_id}
    pool_slice = pool.to_slice()
    structures |= {i: s for i, s in zip(pool_slice.ids, pool_slice.structures, strict=True) if i in by_id}
    ids = [i for i in by_id if i in structures]
    _, static, _ = chgnet_static([structures[i] for i in ids], get_settings().cache_dir / "embeddings.sqlite")
    screen = dict(zip(ids, map(float, static), strict=True))
    phases = {}
    for level, energy in (("chgnet", lambda i: formation(by_id[i])), ("chgnet_static", screen.get)):
        refs_at = [
            Phase(i, by_id[i]["formula"], energy(i), reference=True)
            for i in ids
            if by_id[i]["role"] == "reference"
        ]
        cands = [Phase(i, by_id[i]["formula"], energy(i)) for i in ids if by_id[i]["role"] == "candidate"]
        phases[level] = (refs_at, Hull(level, refs_at, cands))
    oracle = {s.item_id: s for s in phases["chgnet"][1].stability()}
    screened = {s.item_id: s for s in phases["chgnet_static"][1].stability()}

    def rows(role: str) -> list[dict]:
        out = []
        for i in ids:
            if by_id[i]["role"] != role:
                continue
            row = {"id": i, "structure": structures[i].as_dict(),
                   "formation_energy_per_atom [eV/atom]": formation(by_id[i]),
                   "formation_energy_static [eV/atom]": screen[i]}  # fmt: skip
            if role == "candidate":
                row |= {"e_above_hull [eV/atom]": oracle[i].e_above_hull,
                        "e_above_references [eV/atom]": oracle[i].e_above_references,
                        "e_above_hull_static [eV/atom]": screened[i].e_above_hull}  # fmt: skip
            out.append(row)
        return out

    import gzip

    for name, role in (("stable_gen.json.gz", "candidate"), ("references.json.gz", "reference")):
        with gzip.open(DATA_DIR / name, "wt") as fh:
            json.dump(rows(role), fh)
    e_hull = np.array([oracle[i].e_above_hull for i in oracle])
    provenance = {
        "pool": {"templates": "mp_formation_energy (bundled)", "elements": ELEMENTS,
                 "threshold": THRESHOLD, "max_template_sites": MAX_SITES, "candidates": len(pool),
                 "order_seed": ORDER_SEED},
        "references": {"count": len(phases["chgnet"][0]), "max_sites": MAX_REF_SITES,
                       "source": "the four bundled Materials Project sets",
                       "elements": "relaxed at the oracle level"},
        "oracle": "chgnet level: atomate2 ForceFieldRelaxMaker(force_field_name='CHGNet', steps=300)",
        "screen": "chgnet_static level (matloop.models.cheap_level.chgnet_static), unrelaxed structures",
        "labelled_candidates": len(oracle),
        "failed_or_unconverged": len(everything) - len(records),
        "stable": int(np.sum(e_hull <= 1e-6)),
        "within_25meV": int(np.sum(e_hull <= 0.025)),
        "prevalence_stable": round(float(np.mean(e_hull <= 1e-6)), 4),
        "prevalence_25meV": round(float(np.mean(e_hull <= 0.025)), 4),
        "hull": "references and every labelled candidate at the same level; e_above_hull of the static "
                "screen against the static hull of the same phases",
    }  # fmt: skip
    (DATA_DIR / "PROVENANCE.json").write_text(json.dumps(provenance, indent=1) + "\n")
    files = ("stable_gen.json.gz", "references.json.gz", "labels.jsonl", "pool.parquet")
    sums = [f"{hashlib.sha256((DATA_DIR / f).read_bytes()).hexdigest()}  {f}" for f in files]
    (DATA_DIR / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    print(json.dumps(provenance, indent=1))


if __name__ == "__main__":
    sys.exit(main())
