"""Featurization throughput: graphs/s for QM9 molecules and prototype crystals.

For each input set the figure is the ratio of the CPU time of ``featurize_items`` (checks, neighbour list,
nearest-neighbour cut, symmetrisation, node and edge features, ``Data`` objects) to the bare
pymatgen neighbour-list calls on the same structures, measured alternately on chunks of
100 items in the same run (CPU time, as six jobs may share the machine's cores):
``Structure.get_neighbor_list`` for crystals and the routine behind it,
``find_points_in_spheres`` without periodicity, for molecules. Also measured: a second call
served by the on-disk graph cache, peak memory (tracemalloc during one featurization pass,
and the process's peak RSS), the cost of the first call in a fresh interpreter, and the
``featurize`` tool end to end (slice read, first call, cached second call, graphs read back).

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
import time
import tracemalloc
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Molecule, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from _common import peak_rss_mib, timed, write_result
from matloop.data.featurizer import featurize_items
from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import GraphParams, element_table
from matloop.data.prototypes import build_prototype_pool
from matloop.data.slices import DatasetSlice, load_slice, save_slice
from matloop.data.sources import load_source
from matloop.settings import Settings
from matloop.tools import featurize, load_graphs
from matloop.workspace import Workspace

SEED = 0
_NO_PBC = np.zeros(3, dtype=np.int64)

_FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import torch_geometric.data, pymatgen.core  # noqa: F401
t1 = time.perf_counter()
from matloop.data.featurizer import featurize_items
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


def _clocks() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def measure(
    items: list[Structure | Molecule], ids: list[str], params: GraphParams, repeats: int, chunk: int = 100
) -> dict:
    """Throughput against the bare neighbour list, cache speed-up and peak memory of one set.

    The two are timed alternately on chunks of ``chunk`` items, so that both see the same
    machine load; wall and CPU (process) time are both kept, the ratio uses CPU time.
    """
    base = np.zeros(2)  # wall, cpu
    feat = np.zeros(2)
    for _ in range(repeats):
        for start in range(0, len(items), chunk):
            part, part_ids = items[start : start + chunk], ids[start : start + chunk]
            t0 = _clocks()
            bare_neighbor_lists(part, params.cutoff)
            t1 = _clocks()
            featurize_items(part, part_ids, params)
            t2 = _clocks()
            base += t1 - t0
            feat += t2 - t1
    base, feat = base / repeats, feat / repeats
    with tempfile.TemporaryDirectory() as tmp, GraphCache(Path(tmp) / "graphs.sqlite") as cache:
        t0 = _clocks()
        featurize_items(items, ids, params, cache=cache)
        t1 = _clocks()
        cached = featurize_items(items, ids, params, cache=cache)
        t2 = _clocks()
        cache_mib = sum(f.stat().st_size for f in Path(tmp).glob("graphs.sqlite*")) / 2**20
    populate, cached_t = t1 - t0, t2 - t1
    graphs = cached.graphs
    assert cached.cache_hits == len(items)
    n = len(graphs)
    stats = {
        "mean_atoms": float(np.mean([g.num_nodes for g in graphs])),
        "mean_edges": float(np.mean([g.edge_index.shape[1] for g in graphs])),
        "graph_tensors_mib": sum(
            sum(t.numel() * t.element_size() for t in (g.x, g.z, g.edge_index, g.edge_attr, g.edge_dist))
            for g in graphs
        )
        / 2**20,
    }
    del cached, graphs
    gc.collect()
    tracemalloc.start()
    featurize_items(items, ids, params)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "items": len(items),
        "graphs": n,
        "failures": len(items) - n,
        **stats,
        "neighbor_list_wall_s": base[0],
        "neighbor_list_cpu_s": base[1],
        "featurize_wall_s": feat[0],
        "featurize_cpu_s": feat[1],
        "graphs_per_cpu_s": n / feat[1],
        "graphs_per_wall_s": n / feat[0],
        "neighbor_lists_per_cpu_s": len(items) / base[1],
        "ratio_featurize_to_neighbor_list": feat[1] / base[1],
        "ratio_featurize_to_neighbor_list_wall": feat[0] / base[0],
        "cache_populate_cpu_s": populate[1],
        "cached_call_cpu_s": cached_t[1],
        "cached_call_wall_s": cached_t[0],
        "cached_graphs_per_cpu_s": n / cached_t[1],
        "cache_speedup_vs_cold_cpu": feat[1] / cached_t[1],
        "cache_file_mib": cache_mib,
        "tracemalloc_peak_mib": traced_peak / 2**20,
    }


def measure_tool(data: DatasetSlice) -> dict[str, float]:
    """The ``featurize`` tool end to end in a fresh workspace: first call, cached second call."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(workspace=Path(tmp, "ws"), cache_dir=Path(tmp, "cache"))
        ws = Workspace(settings.workspace, settings=settings)
        slice_id = save_slice(ws, data)
        _, load_s = timed(lambda: load_slice(ws, slice_id))
        first, first_s = timed(lambda: featurize(slice_id, workspace=ws))
        second, second_s = timed(lambda: featurize(slice_id, workspace=ws))
        _, load_graphs_s = timed(lambda: load_graphs(second.feature_set_id, workspace=ws))
        assert second.cache_hits == len(data) and second.count == first.count
        return {
            "load_slice_s": load_s,
            "first_call_s": first_s,
            "second_call_s": second_s,
            "second_call_without_load_slice_s": second_s - load_s,
            "load_graphs_s": load_graphs_s,
            "feature_set_file_mib": ws.artifact(second.feature_set_id).path.stat().st_size / 2**20,
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
    figures["qm9_molecules"]["tool"] = measure_tool(qm9)
    del molecules, qm9
    pool = build_prototype_pool(max_items=n_cryst, seed=SEED)
    figures["prototype_crystals"] = measure(list(pool.structures), pool.ids, params, repeats)
    figures["prototype_crystals"]["tool"] = measure_tool(pool)
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
            f"{name}: {f['graphs']} graphs, {f['graphs_per_cpu_s']:.0f} graphs/CPU-s, "
            f"{f['ratio_featurize_to_neighbor_list']:.1f}x the bare neighbour list, "
            f"cached {f['cached_graphs_per_cpu_s']:.0f} graphs/CPU-s, "
            f"tracemalloc peak {f['tracemalloc_peak_mib']:.0f} MiB"
        )
        print(f"  tool: {json.dumps({k: round(v, 2) for k, v in f['tool'].items()})}")
    print(f"first call: {figures['first_call']}; peak RSS {figures['peak_rss_mib']:.0f} MiB -> {path}")


if __name__ == "__main__":
    main()
