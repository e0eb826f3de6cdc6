from __future__ import annotations

import pandas as pd
from pymatgen.core import Lattice, Structure

from matloop.data.slices import DatasetSlice, save_slice
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
