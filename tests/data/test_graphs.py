from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pymatgen.core import DummySpecies, Lattice, Molecule, Structure

from matloop.data.featurizer import featurize_items
from matloop.data.graph_cache import GraphCache, decode, encode
from matloop.data.graphs import (
    MAX_Z,
    GraphError,
    GraphParams,
    build_graph,
    element_table,
    gaussian_expansion,
    graph_arrays,
    structure_hash,
    structure_hashes,
)
from matloop.data.sources import load_source

METHANE = Molecule(
    ["C", "H", "H", "H", "H"],
    [
        [0, 0, 0],
        [0.629, 0.629, 0.629],
        [-0.629, -0.629, 0.629],
        [-0.629, 0.629, -0.629],
        [0.629, -0.629, -0.629],
    ],
)


def _perovskite(a: float = 3.9) -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(a), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
    )


def _rocksalt(a: float = 4.2) -> Structure:
    fcc = Lattice(a / 2 * (np.ones((3, 3)) - np.eye(3)))
    return Structure(fcc, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _edge_multiset(graph) -> Counter:
    src, dst = graph.edge_index.tolist()
    return Counter(zip(src, dst, np.round(graph.edge_dist.numpy(), 4).tolist(), strict=True))


@pytest.mark.parametrize("item", [_perovskite(), METHANE], ids=["periodic", "molecule"])
def test_graph_shapes_and_symmetric_edges(item):
    params = GraphParams()
    graph = build_graph(item, params, "x")
    n, e = len(item), graph.edge_index.shape[1]
    node_dim = element_table(params.node_features).shape[1]
    assert graph.x.shape == (n, node_dim) and graph.x.dtype == torch.float32
    assert graph.z.tolist() == [site.specie.Z for site in item]
    assert graph.edge_index.dtype == torch.int64 and graph.edge_index.shape == (2, e)
    assert graph.edge_attr.shape == (e, params.n_gaussians)
    assert graph.edge_dist.shape == (e,) and float(graph.edge_dist.max()) <= params.cutoff
    assert graph.item_id == "x" and graph.num_nodes == n
    forward = _edge_multiset(graph)
    reverse = Counter({(j, i, d): c for (i, j, d), c in forward.items()})
    assert forward == reverse
    assert not any(i == j and d == 0 for i, j, d in forward)


def test_molecule_is_complete_graph_within_cutoff():
    graph = build_graph(METHANE, GraphParams(cutoff=6.0), "ch4")
    assert graph.edge_index.shape[1] == 5 * 4
    ch = graph.edge_dist[(graph.z[graph.edge_index[0]] == 6)]
    assert torch.allclose(ch, torch.full_like(ch, 0.629 * 3**0.5), atol=1e-3)


def test_periodic_images_give_edges_to_own_copies():
    # One atom per cell: every edge joins the atom to one of its periodic images.
    cu = Structure(Lattice.cubic(2.55), ["Cu"], [[0, 0, 0]])
    graph = build_graph(cu, GraphParams(cutoff=3.0, max_neighbors=12), "cu")
    assert graph.edge_index.shape[1] == 6  # six face neighbours at 2.55 Å within 3 Å
    assert torch.allclose(graph.edge_dist, torch.full((6,), 2.55))


def test_gaussian_expansion_peaks_on_centres():
    g = gaussian_expansion(np.array([0.0, 3.0, 6.0]), cutoff=6.0, n=7)
    assert g.shape == (3, 7) and g.dtype == np.float32
    assert np.allclose(g[[0, 1, 2], [0, 3, 6]], 1.0)
    assert np.isclose(g[0, 1], np.exp(-1.0))  # one width away
    assert np.all(np.diff(g[0]) < 0)


def test_node_features_are_onehot_and_standardised_magpie():
    table = element_table("onehot+magpie")
    onehot, magpie = table[:, :MAX_Z], table[:, MAX_Z:]
    assert magpie.shape[1] == 22
    assert np.array_equal(onehot[8], np.eye(MAX_Z)[7])
    assert abs(float(magpie[1:90].mean())) < 0.2 and np.all(np.isfinite(magpie))
    assert element_table("onehot").shape == (MAX_Z + 1, MAX_Z)


def test_cutoff_and_max_neighbors_change_the_graph():
    mgo = _rocksalt()
    first_shell = build_graph(mgo, GraphParams(cutoff=2.5), "mgo")
    assert first_shell.edge_index.shape[1] == 12  # 6 neighbours per atom at a/2
    wide = build_graph(mgo, GraphParams(cutoff=6.0, max_neighbors=100), "mgo")
    capped = build_graph(mgo, GraphParams(cutoff=6.0, max_neighbors=6), "mgo")
    assert wide.edge_index.shape[1] > 12 * 5
    assert capped.edge_index.shape[1] == 12
    assert torch.allclose(capped.edge_dist, first_shell.edge_dist)
    in_degree = torch.bincount(capped.edge_index[1], minlength=2)
    assert in_degree.tolist() == [6, 6]


def _bad_items() -> dict[str, Structure | Molecule]:
    nan_mol = Molecule(METHANE.species, np.where(np.arange(5)[:, None] == 1, np.nan, METHANE.cart_coords))
    return {
        "overlap": Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]]),
        "coincident": Molecule(["C", "C", "H"], [[0, 0, 0], [0, 0, 0], [1.1, 0, 0]]),
        "tiny_cell": Structure(Lattice.cubic(0.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "isolated": Molecule(["H", "H", "O"], [[0, 0, 0], [0.74, 0, 0], [20, 0, 0]]),
        "lone_atom": Molecule(["Ar"], [[0, 0, 0]]),
        "vacuum_cell": Structure(Lattice.cubic(30.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "nan_coords": nan_mol,
        "inf_coords": Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [np.inf, 0.5, 0.5]]),
        "nan_lattice": Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]]),
        "dummy_species": Molecule(["C", DummySpecies("X")], [[0, 0, 0], [1.2, 0, 0]]),
        "heavy_species": Molecule(["C", "Md"], [[0, 0, 0], [2.0, 0, 0]]),
        "disordered": Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5] * 3]),
        "empty_molecule": Molecule([], []),
        "empty_structure": Structure(Lattice.cubic(4.0), [], []),
    }


EXPECTED_REASON = {
    "overlap": "overlap",
    "coincident": "overlap",
    "tiny_cell": "overlap",
    "isolated": "no neighbour",
    "lone_atom": "no neighbour",
    "vacuum_cell": "no neighbour",
    "nan_coords": "NaN/inf",
    "inf_coords": "NaN/inf",
    "nan_lattice": "NaN/inf",
    "dummy_species": "unknown species",
    "heavy_species": "unknown species",
    "disordered": "disordered",
    "empty_molecule": "empty",
    "empty_structure": "empty",
}


def test_every_bad_item_is_reported_and_the_rest_featurized():
    bad = _bad_items()
    ids = ["good_crystal", *bad, "good_molecule"]
    structures = [_perovskite(), *bad.values(), METHANE]
    graphs, failures, hits = featurize_items(structures, ids)
    assert [g.item_id for g in graphs] == ["good_crystal", "good_molecule"]
    assert hits == 0
    reasons = dict(failures)
    assert set(reasons) == set(bad)
    for item_id, fragment in EXPECTED_REASON.items():
        assert fragment in reasons[item_id], (item_id, reasons[item_id])
    with pytest.raises(GraphError, match="overlap"):
        graph_arrays(bad["overlap"], GraphParams())


def test_cache_serves_second_call_with_identical_graphs(tmp_path):
    items = [_perovskite(), _rocksalt(), METHANE, _bad_items()["overlap"]]
    ids = ["sto", "mgo", "ch4", "bad"]
    with GraphCache(tmp_path / "graphs.sqlite") as cache:
        first = featurize_items(items, ids, cache=cache)
    with GraphCache(tmp_path / "graphs.sqlite") as cache:
        second = featurize_items(items, ids, cache=cache)
        other = featurize_items(items, ids, GraphParams(cutoff=4.0), cache=cache)
    assert first.cache_hits == 0 and second.cache_hits == len(items)
    assert other.cache_hits == 0  # parameters are part of the key
    assert second.failures == first.failures
    for a, b in zip(first.graphs, second.graphs, strict=True):
        assert a.item_id == b.item_id
        for field in ("x", "z", "edge_index", "edge_attr", "edge_dist"):
            assert torch.equal(a[field], b[field]), field


def test_codec_round_trip_and_structure_hash():
    arrays = graph_arrays(_perovskite(), GraphParams())
    back = decode(encode(arrays))
    assert all(np.array_equal(x, y) for x, y in zip(arrays, back, strict=True))
    assert back.edge_dist.flags.writeable
    assert structure_hash(_perovskite()) == structure_hash(_perovskite())
    assert structure_hash(_perovskite(3.9)) != structure_hash(_perovskite(3.95))


def test_progress_callback_reaches_total():
    calls: list[tuple[int, int]] = []
    featurize_items([METHANE] * 3, ["a", "b", "c"], progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (3, 3)


@pytest.mark.parametrize("max_neighbors", [4, 12, 100])
def test_dense_and_cell_list_molecule_graphs_agree(monkeypatch, max_neighbors):
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij"), -1).reshape(-1, 3)
    coords = 1.5 * grid + rng.uniform(-0.2, 0.2, size=grid.shape)  # jitter: no ties, no overlaps
    mol = Molecule(["C", "H", "N", "O"] * 6, coords)
    params = GraphParams(cutoff=4.0, max_neighbors=max_neighbors)
    dense = build_graph(mol, params, "m")
    monkeypatch.setattr("matloop.data.graphs.DENSE_MAX_ATOMS", 0)
    sparse = build_graph(mol, params, "m")
    assert _edge_multiset(dense) == _edge_multiset(sparse)


class _CompactRows(list):
    """Structures that also expose compact rows, as the lazy structures of dataset sources do."""

    accessed = 0

    def __getitem__(self, index):
        type(self).accessed += 1
        return super().__getitem__(index)

    def columns(self):
        return {
            "species": [[site.specie.symbol for site in s] for s in self],
            "coords": [np.ravel(s.frac_coords if isinstance(s, Structure) else s.cart_coords) for s in self],
            "lattice": [np.ravel(s.lattice.matrix) if isinstance(s, Structure) else None for s in self],
        }


def test_compact_rows_hit_the_cache_without_building_structures(tmp_path):
    items = [_perovskite(), _rocksalt(), METHANE, _bad_items()["overlap"]]
    ids = ["sto", "mgo", "ch4", "bad"]
    with GraphCache(tmp_path / "graphs.sqlite") as cache:
        first = featurize_items(items, ids, cache=cache)
        rows = _CompactRows(items)
        _CompactRows.accessed = 0
        second = featurize_items(rows, ids, cache=cache)
    assert second.cache_hits == 4 and _CompactRows.accessed == 0
    assert second.failures == first.failures
    assert [g.item_id for g in second.graphs] == ["sto", "mgo", "ch4"]
    assert all(
        torch.equal(a.edge_index, b.edge_index) for a, b in zip(first.graphs, second.graphs, strict=True)
    )


def test_graphs_from_compact_rows_equal_the_graphs_of_built_structures():
    items = [_perovskite(), _rocksalt(), METHANE, _bad_items()["overlap"]]
    ids = ["sto", "mgo", "ch4", "bad"]
    built = featurize_items(items, ids)
    _CompactRows.accessed = 0
    compact = featurize_items(_CompactRows(items), ids)
    assert _CompactRows.accessed == 0  # no pymatgen object built
    assert compact.failures == built.failures and "overlap" in compact.failures[0].reason
    for a, b in zip(built.graphs, compact.graphs, strict=True):
        assert torch.equal(a.edge_index, b.edge_index) and torch.allclose(a.edge_dist, b.edge_dist)


def test_hashes_from_dataset_rows_equal_the_hashes_of_built_structures(settings):
    """Caches keyed by structure hash (graphs, embeddings) hit whether a dataset's lazy rows or
    pymatgen objects built from them come in."""
    lazy = load_source("mp_dielectric", settings=settings).structures.take(range(40))
    assert structure_hashes(lazy) == [structure_hash(s) for s in list(lazy)]
