"""Featurization throughput: graphs/s for QM9 molecules and prototype crystals.

For each input set the figure is the ratio of ``featurize_items`` (checks, neighbour list,
nearest-neighbour cut, symmetrisation, node and edge features, ``Data`` objects) to the bare
pymatgen neighbour-list calls on the same structures, measured in the same run:
``Structure.get_neighbor_list`` for crystals and the routine behind it,
``find_points_in_spheres`` without periodicity, for molecules. Also measured: a second call
served by the on-disk graph cache, peak memory (tracemalloc during one featurization pass,
and the process's peak RSS), and the cost of the first call in a fresh interpreter.

    python benchmarks/featurize.py            # 10,000 QM9 molecules, 1,000 crystals
    python benchmarks/featurize.py --quick    # 1,000 molecules, 200 crystals
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import tracemalloc
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Molecule, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from _common import peak_rss_mib, timed, write_result
from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import GraphParams, element_table, featurize_items
from matloop.data.prototypes import build_prototype_pool
from matloop.data.sources import load_source

SEED = 0
_NO_PBC = np.zeros(3, dtype=np.int64)

_FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import torch_geometric.data, pymatgen.core  # noqa: F401
t1 = time.perf_counter()
from matloop.data.graphs import featurize_items
from pymatgen.core import Molecule
t2 = time.perf_counter()
featurize_items([Molecule(["C", "O"], [[0, 0, 0], [1.13, 0, 0]])], ["co"])
t3 = time.perf_counter()
print(json.dumps({"dependency_import_s": t1 - t0, "matloop_import_s": t2 - t1, "first_graph_s": t3 - t2}))
"""


def bare_neighbor_lists(items: list[Structure | Molecule], cutoff: float) -> int:
    """The pymatgen neighbour-list call alone on every item; returns the number of pairs."""
    pairs = 0
    for item in items:
        if isinstance(item, Structure):
            pairs += len(item.get_neighbor_list(r=cutoff)[0])
        else:
            coords = item.cart_coords
            pairs += len(find_points_in_spheres(coords, coords, r=cutoff, pbc=_NO_PBC, lattice=np.eye(3))[0])
    return pairs


def measure(items: list[Structure | Molecule], ids: list[str], params: GraphParams, repeats: int) -> dict:
    """Throughput against the bare neighbour list, cache speed-up and peak memory of one set."""
    baseline = min(timed(lambda: bare_neighbor_lists(items, params.cutoff))[1] for _ in range(repeats))
    runs = [timed(lambda: featurize_items(items, ids, params)) for _ in range(repeats)]
    result, seconds = min(runs, key=lambda r: r[1])
    graphs = result.graphs
    with tempfile.TemporaryDirectory() as tmp, GraphCache(Path(tmp) / "graphs.sqlite") as cache:
        _, populate_s = timed(lambda: featurize_items(items, ids, params, cache=cache))
        cached, cached_s = timed(lambda: featurize_items(items, ids, params, cache=cache))
        cache_mib = Path(tmp, "graphs.sqlite").stat().st_size / 2**20
    assert cached.cache_hits == len(items) and len(cached.graphs) == len(graphs)
    del cached, runs, result
    gc.collect()
    tracemalloc.start()
    featurize_items(items, ids, params)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(graphs)
    return {
        "items": len(items),
        "graphs": n,
        "failures": len(items) - n,
        "mean_atoms": float(np.mean([g.num_nodes for g in graphs])),
        "mean_edges": float(np.mean([g.edge_index.shape[1] for g in graphs])),
        "neighbor_list_s": baseline,
        "featurize_s": seconds,
        "graphs_per_s": n / seconds,
        "neighbor_lists_per_s": len(items) / baseline,
        "ratio_featurize_to_neighbor_list": seconds / baseline,
        "cache_populate_s": populate_s,
        "cached_call_s": cached_s,
        "cached_graphs_per_s": n / cached_s,
        "cache_speedup_vs_cold": seconds / cached_s,
        "cache_file_mib": cache_mib,
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "graph_tensors_mib": sum(
            sum(t.numel() * t.element_size() for t in (g.x, g.z, g.edge_index, g.edge_attr, g.edge_dist))
            for g in graphs
        )
        / 2**20,
    }


def first_call() -> dict[str, float]:
    """Import and first-graph cost in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 1,000 molecules, 200 crystals")
    parser.add_argument("--molecules", type=int, help="QM9 molecules (default 10,000; quick 1,000)")
    parser.add_argument("--crystals", type=int, help="prototype crystals (default 1,000; quick 200)")
    parser.add_argument("--repeats", type=int, help="timing repeats, best kept (default 3; quick 1)")
    args = parser.parse_args()
    n_mol = args.molecules or (1000 if args.quick else 10_000)
    n_cryst = args.crystals or (200 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    params = GraphParams()
    element_table(params.node_features)  # loaded once per process; its cost is in first_call

    figures: dict[str, Any] = {"first_call": first_call()}
    qm9 = load_source("qm9", max_rows=n_mol)
    molecules = list(qm9.structures)
    figures["qm9_molecules"] = measure(molecules, list(qm9.ids), params, repeats)
    del molecules, qm9
    pool = build_prototype_pool(max_items=n_cryst, seed=SEED)
    figures["prototype_crystals"] = measure(list(pool.structures), pool.ids, params, repeats)
    figures["peak_rss_mib"] = peak_rss_mib()

    path = write_result(
        "featurize",
        {
            "mode": "quick" if args.quick else "full",
            "seeds": {"prototype_pool": SEED},
            "inputs": {
                "qm9_molecules": f"first {n_mol} rows of QM9 (matloop.data.sources.load_source('qm9'))",
                "prototype_crystals": f"build_prototype_pool(max_items={n_cryst}, seed={SEED})",
            },
            "baseline": "pymatgen Structure.get_neighbor_list (crystals); find_points_in_spheres, pbc off "
            "(molecules); same cutoff",
            "repeats": repeats,
            "params": asdict(params),
            **figures,
        },
    )
    for name in ("qm9_molecules", "prototype_crystals"):
        f = figures[name]
        print(
            f"{name}: {f['graphs']} graphs, {f['graphs_per_s']:.0f} graphs/s, "
            f"{f['ratio_featurize_to_neighbor_list']:.1f}x the bare neighbour list, "
            f"cached {f['cached_graphs_per_s']:.0f} graphs/s, "
            f"tracemalloc peak {f['tracemalloc_peak_mib']:.0f} MiB"
        )
    print(f"first call: {figures['first_call']}; peak RSS {figures['peak_rss_mib']:.0f} MiB -> {path}")


if __name__ == "__main__":
    main()
