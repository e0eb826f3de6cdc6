"""Validation levels and executors: wall time per structure, and what the executor costs.

For each level a fixed small set runs through ``queue_validation`` → ``collect_validation``
on the local executor (background worker process) and, as the baseline measured in the same
run, in-process with ``jobflow.run_locally`` of the same Flows (no worker, no SQLite). The
headline figures are seconds per structure for each level and the ratio executor / in-process
wall time (the executor's figure includes starting the worker process and importing the
code there, paid by the first job); per job the store gives the time waiting in the queue,
the time in the calculation and the bookkeeping around it. xTB also runs on a Dask
``LocalCluster``, and its gaps are compared with QM9's B3LYP gaps for context.

Sets: CHGNet and SevenNet: 5 oxides (4 cubic perovskites, rock-salt MgO; ≤ 5 atoms; the first
structure containing an element also relaxes its elemental reference, as in a campaign);
CP2K: two 2-atom rock-salt cells (MgO, LiF); xTB: the first 50 QM9 molecules (ASE's G2 set
when qm9pack is not installed).

    python benchmarks/validation.py            # the sets above
    python benchmarks/validation.py --quick    # 2 crystals, 10 molecules, no CP2K

Slurm throughput (``--executor slurm``, needs a running Slurm, e.g. ``scripts/slurm-local.sh
start``): ``--n`` (≥ 20) CHGNet formation-energy calculations of distinct oxides and halides
(20 structures, 16 elements, each element's reference relaxed once) through the ``slurm``
executor and, as the baseline in the same run, through the ``local`` executor, both with one
calculation at a time (``--max-jobs 1``). Figures: wall time, per-calculation overhead
(wall minus the calculations' own time, per calculation), overhead as a fraction of compute,
and the cold start of the first worker (submission, scheduling, Python start-up, imports).
Writes ``results/validation_slurm.json``.

    python benchmarks/validation.py --executor slurm --n 20
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Molecule, Structure

from _common import write_result
from matloop.data.slices import DatasetSlice, save_slice
from matloop.settings import Settings
from matloop.tools import collect_validation, queue_validation
from matloop.validation.levels import LevelContext, get_level
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace


def perovskite(a: str, b: str, lattice: float) -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(lattice), [a, b, "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]
    )


def rocksalt(a: str, b: str, lattice: float) -> Structure:
    prim = Lattice.from_parameters(*(3 * [lattice / 2**0.5]), 60, 60, 60)
    return Structure(prim, [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


CRYSTALS = {
    "SrTiO3": perovskite("Sr", "Ti", 3.95),
    "MgO": rocksalt("Mg", "O", 4.21),
    "BaTiO3": perovskite("Ba", "Ti", 4.00),
    "CaTiO3": perovskite("Ca", "Ti", 3.85),
    "KNbO3": perovskite("K", "Nb", 4.02),
}
CP2K_CELLS = {"MgO": rocksalt("Mg", "O", 4.21), "LiF": rocksalt("Li", "F", 4.03)}
THROUGHPUT_CRYSTALS = {
    **{
        f"{a}{b}": rocksalt(a, b, lattice)
        for a, b, lattice in [
            ("Mg", "O", 4.21),
            ("Ca", "O", 4.81),
            ("Sr", "O", 5.16),
            ("Ba", "O", 5.52),
            ("Na", "Cl", 5.64),
            ("K", "Cl", 6.29),
            ("Li", "F", 4.03),
            ("Na", "F", 4.63),
            ("K", "F", 5.35),
            ("Li", "Cl", 5.13),
        ]
    },
    **{
        f"{a}{b}O3": perovskite(a, b, lattice)
        for a, b, lattice in [
            ("Sr", "Ti", 3.95),
            ("Ba", "Ti", 4.00),
            ("Ca", "Ti", 3.85),
            ("K", "Nb", 4.02),
            ("Na", "Nb", 3.95),
            ("Sr", "Zr", 4.15),
            ("Ba", "Zr", 4.19),
            ("Ca", "Zr", 4.02),
            ("K", "Ta", 3.99),
            ("La", "Al", 3.79),
        ]
    },
}


def molecules(n: int, settings: Settings) -> tuple[dict[str, Molecule], dict[str, float], str]:
    """``n`` QM9 molecules (with their B3LYP gaps, eV), or ASE G2 molecules without qm9pack."""
    try:
        from matloop.data.sources import load_source

        data = load_source("qm9", max_rows=n, settings=settings)
        gaps = dict(zip(data.ids, data.target("gap"), strict=True))
        return dict(zip(data.ids, data.structures, strict=True)), gaps, "qm9"
    except Exception:  # qm9pack missing: fall back to a molecule set shipped with ASE
        from ase.build import molecule
        from ase.collections import g2
        from pymatgen.io.ase import AseAtomsAdaptor

        names = [m for m in g2.names if len(molecule(m)) > 1][:n]
        return {m: AseAtomsAdaptor.get_molecule(molecule(m)) for m in names}, {}, "ase-g2"


def in_process(level: str, items: dict[str, Any], settings: Settings, root: Path) -> float:
    """Baseline: the same Flows run in this process, one after another; seconds in total."""
    spec = get_level(level)
    assert spec.build is not None
    references: dict[str, float] = {}
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k, item in enumerate(items.values()):
        flow = spec.build(item, LevelContext(settings, dict(references)))
        store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})
        run_locally(flow, store=store, create_folders=True, root_dir=root / f"{level}-{k}", log=False)
        doc = flow.output.resolve(store)
        references.update(doc.references)
    return time.perf_counter() - start


def through_executor(
    ws: Workspace, items: dict[str, Any], kind: str, level: str, executor: str
) -> dict[str, Any]:
    """Queue → collect one batch; timings from the caller and from the job store."""
    slice_id = _save(ws, items, kind)
    start = time.perf_counter()
    batch = queue_validation(slice_id, list(items), level=level, executor=executor, workspace=ws)
    queue_call = time.perf_counter() - start
    result = collect_validation(batch.batch_id, timeout_s=1800, workspace=ws)
    wall = time.perf_counter() - start
    jobs = ValidationStore(ws).jobs(batch_id=batch.batch_id)
    done = [j for j in jobs if j.status == "done"]
    calc = [j.calc_seconds or 0.0 for j in done]
    waits = [j.started_at - j.queued_at for j in done if j.started_at]
    around = [(j.finished_at - j.started_at) - (j.calc_seconds or 0.0) for j in done if j.started_at]
    return {
        "level": level,
        "executor": executor,
        "batch_id": batch.batch_id,
        "n": len(jobs),
        "n_done": len(done),
        "failures": [f.model_dump() for f in result.failures],
        "queue_call_s": round(queue_call, 3),
        "wall_s": round(wall, 2),
        "wall_per_structure_s": round(wall / max(len(done), 1), 3),
        "calc_first_job_s": round(calc[0], 3) if calc else None,  # includes the worker's cold start
        "calc_per_structure_s": {
            "mean": round(statistics.fmean(calc), 3) if calc else None,
            "median": round(statistics.median(calc), 3) if calc else None,
            "max": round(max(calc), 3) if calc else None,
        },
        "queue_wait_s": {"mean": round(statistics.fmean(waits), 2), "max": round(max(waits), 2)}
        if waits
        else None,
        "bookkeeping_per_job_s": round(statistics.fmean(around), 3) if around else None,
        "executor_overhead_fraction": round(1 - sum(calc) / wall, 3) if wall else None,
        "labels": {f"{lab.item_id}:{lab.property}": round(lab.value, 4) for lab in result.labels},
    }


def _save(ws: Workspace, items: dict[str, Any], kind: str) -> str:
    data = DatasetSlice(
        ids=list(items),
        structures=list(items.values()),
        properties=pd.DataFrame(index=range(len(items))),
        units={},
        kind=kind,  # type: ignore[arg-type]
        source="benchmark",
    )
    return save_slice(ws, data)


def slurm_throughput(n: int, max_jobs: int) -> None:
    """CHGNet formation energies through the slurm executor vs the local one (same run)."""
    from matloop.validation.slurm import close_pools, slurm_jobs

    slurm_jobs(set(), 30)  # raises when no Slurm controller answers
    items = dict(list(THROUGHPUT_CRYSTALS.items())[:n])
    resources = {"cores": 1, "memory": "3GB", "walltime": "02:00:00", "max_jobs": max_jobs}
    rows = []
    with tempfile.TemporaryDirectory(prefix="matloop-bench-slurm-") as tmp:
        root = Path(tmp)
        settings = Settings(
            workspace=root / "ws", cache_dir=root / "cache", validation={"slurm": {"default": resources}}
        )
        for executor in ("local", "slurm"):
            ws = Workspace(root / f"ws-{executor}", settings=settings)  # fresh: references computed in both
            print(f"[chgnet] {n} structures on {executor}", flush=True)
            row = through_executor(ws, items, "crystal", "chgnet", executor)
            jobs = ValidationStore(ws).jobs(batch_id=row.pop("batch_id"))
            compute = sum(j.calc_seconds or 0.0 for j in jobs)
            cold = min(j.started_at for j in jobs if j.started_at) - min(j.queued_at for j in jobs)
            done = max(row["n_done"], 1)
            spans = sorted((j.started_at, j.finished_at) for j in jobs if j.started_at and j.finished_at)
            gaps = [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(spans)]
            row.update(
                dispatch_gap_s=round(statistics.fmean(gaps), 3) if gaps else None,
                compute_s=round(compute, 2),
                cold_start_s=round(cold, 2),
                overhead_fraction_of_compute=round((row["wall_s"] - compute) / compute, 4),
                overhead_per_calculation_s=round((row["wall_s"] - compute) / done, 3),
                overhead_per_calculation_after_cold_start_s=round((row["wall_s"] - compute - cold) / done, 3),
                worker_jobs=sorted({j.remote_id for j in jobs if j.remote_id}) or None,
            )
            row.pop("labels")
            rows.append(row)
            print(
                f"  {executor}: wall {row['wall_s']} s, compute {row['compute_s']} s, overhead "
                f"{row['overhead_fraction_of_compute']:.1%} of compute, cold start {row['cold_start_s']} s",
                flush=True,
            )
        close_pools()
    local, slurm = rows
    per_calc = slurm["compute_s"] / max(slurm["n_done"], 1)
    steady = (slurm["bookkeeping_per_job_s"] or 0.0) + (slurm["dispatch_gap_s"] or 0.0)
    keys = [
        "wall_s",
        "compute_s",
        "cold_start_s",
        "overhead_per_calculation_s",
        "overhead_per_calculation_after_cold_start_s",
        "overhead_fraction_of_compute",
        "bookkeeping_per_job_s",
        "dispatch_gap_s",
    ]
    path = write_result(
        "validation_slurm",
        {
            "seeds": None,
            "set": {"level": "chgnet", "structures": list(items), "n": len(items), "max_jobs": max_jobs},
            "slurm_resources": resources,
            "table": {r["executor"]: {k: r[k] for k in keys} for r in rows},
            "slurm_wall_ratio_to_local": round(slurm["wall_s"] / local["wall_s"], 3),
            "scaling_to_1000": {
                "how": "worker jobs run calculations one after another, so Slurm's cost (submission, "
                "scheduling, Python start-up) is paid once per worker job (max_jobs of them, in "
                "parallel), not per calculation; estimate = (cold start + 1000 x (bookkeeping + "
                "dispatch gap per calculation)) / (1000 x compute per calculation), one worker job",
                "estimated_overhead_fraction_of_compute": round(
                    (slurm["cold_start_s"] + 1000 * steady) / (1000 * per_calc), 4
                ),
                "one_slurm_job_per_calculation_overhead_fraction": round(slurm["cold_start_s"] / per_calc, 3),
            },
            "runs": rows,
        },
    )
    print(pd.DataFrame({r["executor"]: {k: r[k] for k in keys} for r in rows}).T.to_string())
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 crystals, 10 molecules, no CP2K")
    parser.add_argument(
        "--executor", choices=["slurm"], help="throughput of this executor vs local (CHGNet, --n structures)"
    )
    parser.add_argument("--n", type=int, default=20, help="calculations in the throughput run")
    parser.add_argument("--max-jobs", type=int, default=1, help="Slurm worker jobs at once")
    args = parser.parse_args()
    if args.executor == "slurm":
        if not 1 <= args.n <= len(THROUGHPUT_CRYSTALS):
            parser.error(f"expected --n between 1 and {len(THROUGHPUT_CRYSTALS)}, got {args.n}")
        slurm_throughput(args.n, args.max_jobs)
        return
    n_crystals, n_molecules = (2, 10) if args.quick else (5, 50)
    crystals = dict(list(CRYSTALS.items())[:n_crystals])
    rows: list[dict[str, Any]] = []
    baselines: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="matloop-bench-validation-") as tmp:
        root = Path(tmp)
        settings = Settings(workspace=root / "ws", cache_dir=root / "cache")
        mols, qm9_gaps, mol_source = molecules(n_molecules, settings)
        plan: list[tuple[str, dict[str, Any], str, list[str]]] = [
            ("xtb", mols, "molecule", ["local", "dask"]),
            ("chgnet", crystals, "crystal", ["local"]),
            ("sevenn", crystals, "crystal", ["local"]),
        ]
        if not args.quick:
            plan.append(("cp2k", CP2K_CELLS, "crystal", ["local"]))
        for level, items, kind, executors in plan:
            print(f"[{level}] {len(items)} structures", flush=True)
            for executor in executors:
                ws = Workspace(root / f"ws-{level}-{executor}", settings=settings)  # fresh: no duplicates
                rows.append(through_executor(ws, items, kind, level, executor))
                print(f"  {executor}: {rows[-1]['wall_per_structure_s']} s/structure", flush=True)
            if level != "cp2k":  # CP2K's in-process baseline would double the longest part of the run
                seconds = in_process(level, items, settings, root / "direct")
                baselines[level] = {
                    "total_s": round(seconds, 2),
                    "per_structure_s": round(seconds / len(items), 3),
                }
                print(f"  in-process: {baselines[level]['per_structure_s']} s/structure", flush=True)
    for row in rows:
        base = baselines.get(row["level"])
        row["ratio_to_in_process"] = round(row["wall_s"] / base["total_s"], 3) if base else None
    xtb = next(r for r in rows if r["level"] == "xtb" and r["executor"] == "local")
    comparison = None
    if qm9_gaps:
        pairs = [(xtb["labels"][f"{i}:gap"], g) for i, g in qm9_gaps.items() if f"{i}:gap" in xtb["labels"]]
        x, y = np.array(pairs).T
        comparison = {
            "n": len(pairs),
            "mean_xtb_minus_b3lyp_eV": round(float(np.mean(x - y)), 3),
            "pearson_r": round(float(np.corrcoef(x, y)[0, 1]), 3),
        }
    for row in rows:
        row.pop("labels")
    table = {
        f"{r['level']}/{r['executor']}": {
            "s_per_structure": r["wall_per_structure_s"],
            "calc_s_per_structure": r["calc_per_structure_s"]["median"],
            "ratio_to_in_process": r["ratio_to_in_process"],
        }
        for r in rows
    }
    path = write_result(
        "validation",
        {
            "quick": args.quick,
            "seeds": None,
            "sets": {
                "crystals": list(crystals),
                "cp2k": [] if args.quick else list(CP2K_CELLS),
                "molecules": {"source": mol_source, "n": len(mols)},
            },
            "table": table,
            "in_process_baseline": baselines,
            "runs": rows,
            "xtb_vs_qm9_gap": comparison,
        },
    )
    print(pd.DataFrame(table).T.to_string())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
