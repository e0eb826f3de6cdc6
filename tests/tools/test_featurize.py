from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Molecule, Structure

from matloop.data.feature_sets import atomic_numbers
from matloop.data.graphs import GraphParams, build_graph
from matloop.data.slices import DatasetSlice, save_slice
from matloop.errors import ToolInputError
from matloop.tools import featurize, load_graphs


def _perovskite(a: float) -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(a), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
    )


def test_featurize_builds_symmetric_graphs_and_reports_bad_items(workspace):
    overlap = Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    data = DatasetSlice(
        ids=["good", "overlap"],
        structures=[_perovskite(3.9), overlap],
        properties=pd.DataFrame({"e": [1.0, 2.0]}),
        units={"e": "eV"},
        kind="crystal",
        source="test",
    )
    result = featurize(save_slice(workspace, data), workspace=workspace)
    assert result.count == 1
    assert [f.item_id for f in result.failures] == ["overlap"]
    assert "overlap" in result.failures[0].reason
    graph = load_graphs(result.feature_set_id, workspace=workspace).graphs[0]
    assert graph.x.shape == (5, result.node_dim)
    pairs = set(map(tuple, graph.edge_index.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs)


def _slice(workspace, structures, kind="crystal") -> str:
    ids = [f"item-{k}" for k in range(len(structures))]
    data = DatasetSlice(
        ids=ids,
        structures=structures,
        properties=pd.DataFrame({"e": np.arange(len(ids), dtype=float)}),
        units={"e": "eV"},
        kind=kind,
        source="test",
    )
    return save_slice(workspace, data)


def test_second_call_is_served_from_cache_with_same_graphs(workspace):
    slice_id = _slice(workspace, [_perovskite(a) for a in (3.8, 3.9, 4.0)])
    first = featurize(slice_id, workspace=workspace)
    second = featurize(slice_id, workspace=workspace)
    assert first.cache_hits == 0 and second.cache_hits == second.count == 3
    assert second.feature_set_id != first.feature_set_id
    a = load_graphs(first.feature_set_id, workspace=workspace)
    b = load_graphs(second.feature_set_id, workspace=workspace)
    assert a.ids == b.ids == ["item-0", "item-1", "item-2"]
    assert b.meta["slice_id"] == slice_id and b.meta["kind"] == "crystal"
    direct = build_graph(_perovskite(3.8), GraphParams(**b.meta["params"]), "item-0")
    for ga, gb in zip([direct, *a.graphs[1:]], b.graphs, strict=True):
        assert ga.item_id == gb.item_id
        for field in ("x", "z", "edge_index", "edge_attr", "edge_dist"):
            assert torch.equal(ga[field], gb[field])


def test_molecules_and_progress(workspace):
    ch4 = Molecule(["C", "H", "H", "H", "H"], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                               [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])  # fmt: skip
    seen: list[tuple[int, int]] = []
    result = featurize(
        _slice(workspace, [ch4, Molecule(["H", "H"], [[0, 0, 0], [0.2, 0, 0]])], kind="molecule"),
        workspace=workspace,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert (result.count, result.n_failed) == (1, 1)
    assert result.failures[0].item_id == "item-1" and "overlap" in result.failures[0].reason
    assert seen[-1] == (2, 2)
    graphs = load_graphs(result.feature_set_id, workspace=workspace)
    assert graphs.meta["kind"] == "molecule"
    assert graphs.graphs[0].edge_index.shape == (2, 20)


def test_cutoff_and_max_neighbors_are_applied_and_recorded(workspace):
    slice_id = _slice(workspace, [_perovskite(3.9)])
    small = featurize(slice_id, cutoff=3.0, max_neighbors=4, workspace=workspace)
    large = featurize(slice_id, cutoff=8.0, max_neighbors=24, workspace=workspace)
    assert (small.cutoff, small.max_neighbors) == (3.0, 4)
    assert small.mean_edges_per_atom < large.mean_edges_per_atom
    meta = load_graphs(small.feature_set_id, workspace=workspace).meta
    assert meta["params"]["cutoff"] == 3.0 and meta["params"]["max_neighbors"] == 4
    graph = load_graphs(small.feature_set_id, workspace=workspace).graphs[0]
    assert float(graph.edge_dist.max()) <= 3.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"cutoff": 0.0}, "cutoff"), ({"max_neighbors": 0}, "max_neighbors")]
)
def test_bad_arguments_raise_tool_input_errors(workspace, kwargs, fragment):
    slice_id = _slice(workspace, [_perovskite(3.9)])
    with pytest.raises(ToolInputError, match=fragment):
        featurize(slice_id, workspace=workspace, **kwargs)
    with pytest.raises(ToolInputError, match="expected a known slice id"):
        featurize("slice-missing", workspace=workspace)


def test_a_view_of_stored_graphs_reads_the_same_graphs_and_atomic_numbers(workspace):
    slice_id = _slice(workspace, [_perovskite(a) for a in (3.8, 3.9, 4.0)] + [_perovskite(4.0) * (2, 1, 1)])
    graphs = load_graphs(featurize(slice_id, workspace=workspace).feature_set_id, workspace=workspace).graphs
    view = graphs.take([3, 0])
    assert [g.item_id for g in view] == ["item-3", "item-0"] and len(view) == 2
    for got, want in zip(view, [graphs[3], graphs[0]], strict=True):
        for field in ("x", "z", "edge_index", "edge_attr"):
            assert torch.equal(got[field], want[field])
    assert [len(z) for z in atomic_numbers(view)] == [10, 5]
    assert [z.tolist() for z in atomic_numbers(view)] == [g.z.tolist() for g in view]
