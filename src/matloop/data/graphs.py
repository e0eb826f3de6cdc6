"""Crystal and molecule graphs: pymatgen neighbour lists → torch-geometric ``Data``.

Each graph carries
``x`` (float32, [n_atoms, node_dim]) element embedding per atom,
``z`` (int64, [n_atoms]) atomic numbers,
``edge_index`` (int64, [2, n_edges]) source → target, symmetric,
``edge_attr`` (float32, [n_edges, n_gaussians]) Gaussian expansion of the distance,
``edge_dist`` (float32, [n_edges]) distances in Å,
and ``item_id`` (str) the dataset id it came from.

A graph is fully determined by its compact form :class:`GraphArrays` (``z``, ``edge_index``,
``edge_dist``) and the :class:`GraphParams`; node and edge features are recomputed from it on
load, so caches and stored feature sets hold only the compact form.

Neighbours come from pymatgen's cell-list routine ``find_points_in_spheres`` (the one behind
``Structure.get_neighbor_list``) for crystals and large molecules, and from the distance
matrix for molecules of up to ``DENSE_MAX_ATOMS`` atoms.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from pymatgen.core import Element, Molecule, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from matloop.errors import MissingExtraError

if TYPE_CHECKING:
    from torch_geometric.data import Data

MAX_Z = 100
#: Molecules up to this size use a dense distance matrix instead of the cell list.
DENSE_MAX_ATOMS = 200
#: Bumped whenever graph construction changes, so that cached graphs of older code are not reused.
GRAPH_VERSION = 2
logger = logging.getLogger(__name__)

#: Sphere packing bound: n atoms at least ``d`` apart need a volume of at least
#: n·(π/6)d³/0.7405 ≈ 0.707·n·d³, so a smaller cell must contain overlapping atoms.
_PACKING_VOLUME = np.pi / 6 / 0.7405


@dataclass(frozen=True)
class GraphParams:
    """Everything that changes a graph; hashed into the cache key."""

    cutoff: float = 6.0
    max_neighbors: int = 12
    n_gaussians: int = 40
    node_features: str = "onehot+magpie"
    min_distance: float = 0.5

    def __post_init__(self) -> None:
        if not self.cutoff > 0 or not np.isfinite(self.cutoff):
            raise ValueError(f"cutoff must be a positive number of Å, got {self.cutoff}")
        if self.max_neighbors < 1:
            raise ValueError(f"max_neighbors must be >= 1, got {self.max_neighbors}")
        if self.n_gaussians < 2:
            raise ValueError(f"n_gaussians must be >= 2, got {self.n_gaussians}")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class GraphError(ValueError):
    """An item that cannot become a graph; the message is the per-item reason."""


class GraphArrays(NamedTuple):
    """Compact graph: atomic numbers, symmetric ``edge_index`` (source, target) and distances."""

    z: np.ndarray  # int64 [n]
    edge_index: np.ndarray  # int64 [2, E]
    edge_dist: np.ndarray  # float32 [E]


class Atoms(NamedTuple):
    """What a graph is built from: atomic numbers, Cartesian coordinates (Å) and, for a crystal,
    its lattice (row vectors) and periodicity; read from a pymatgen object (:func:`atoms_of`) or
    straight from compact dataset rows (:func:`compact_atoms`)."""

    z: np.ndarray  # int64 [n]
    cart: np.ndarray  # float64 [n, 3]
    lattice: np.ndarray | None = None  # float64 [3, 3]; None for a molecule
    pbc: np.ndarray | None = None  # int64 [3]; None for a molecule


@cache
def element_table(node_features: str) -> np.ndarray:
    """[MAX_Z + 1, node_dim] float32 table of node features indexed by atomic number."""
    parts: list[np.ndarray] = []
    if "onehot" in node_features:
        parts.append(np.eye(MAX_Z + 1, dtype=np.float32)[:, 1:])
    if "magpie" in node_features:
        parts.append(_magpie_table())
    if not parts:
        raise ValueError(f"unknown node_features {node_features!r}")
    return np.concatenate(parts, axis=1)


def _magpie_table() -> np.ndarray:
    """Magpie element descriptors, standardised per column (0 where an element has no data).

    Read straight from the CSV shipped inside the ``elementembeddings`` wheel (offline),
    without importing the package, whose import pulls in plotting and ML libraries.
    """
    spec = importlib.util.find_spec("elementembeddings")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("Magpie node features need the 'elementembeddings' package")
    path = Path(next(iter(spec.submodule_search_locations))) / "data/element_representations/magpie.csv"
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    table = np.full((MAX_Z + 1, len(rows[0]) - 1), np.nan, dtype=np.float64)
    for symbol, *values in rows[1:]:
        z = Element(symbol).Z
        if z <= MAX_Z:
            table[z] = [float(v) if v else np.nan for v in values]
    mean = np.nanmean(table, axis=0)
    std = np.nanstd(table, axis=0)
    std[std == 0] = 1.0
    table = (table - mean) / std
    return np.nan_to_num(table, nan=0.0).astype(np.float32)


def gaussian_expansion(dist: np.ndarray, cutoff: float, n: int) -> np.ndarray:
    """exp(-(d - μ_k)² / σ²) on ``n`` centres evenly spaced in [0, cutoff], σ = spacing."""
    inv_width, scaled_centres = _scaled_centres(float(cutoff), int(n))
    arg = dist.astype(np.float32)[:, None] * inv_width - scaled_centres
    np.square(arg, out=arg)
    # Below e^-80 the value is 0 for any purpose; clipping avoids slow float32 underflow.
    np.minimum(arg, 80.0, out=arg)
    np.negative(arg, out=arg)
    return np.exp(arg, out=arg)


@cache
def _scaled_centres(cutoff: float, n: int) -> tuple[np.float32, np.ndarray]:
    """1/σ and μ_k/σ of the Gaussian expansion."""
    centres = np.linspace(0.0, cutoff, n, dtype=np.float32)
    inv_width = np.float32(1.0) / (centres[1] - centres[0])
    return inv_width, (centres * inv_width)[None, :]


def structure_hash(item: Structure | Molecule) -> str:
    """Content hash of atomic numbers, Cartesian coordinates (1e-6 Å) and lattice: the graph
    cache's key, which dataset rows give without building the object (:func:`structure_hashes`).
    Items with disordered or unknown species hash their species strings instead."""
    try:
        return content_key(atoms_of(item))
    except GraphError:
        h = hashlib.sha256(" ".join(site.species_string for site in item).encode())
        h.update(np.round(item.cart_coords, 6).tobytes())
        if isinstance(item, Structure):
            h.update(np.round(item.lattice.matrix, 6).tobytes())
        return h.hexdigest()


def structure_hashes(structures: Sequence[Structure | Molecule]) -> list[str]:
    """Content hashes of many items: read from compact rows without building pymatgen objects
    where the sequence allows it (dataset sources), else :func:`structure_hash` per item."""
    compact = compact_atoms(structures) or [None] * len(structures)
    return [
        content_key(atoms) if atoms is not None else structure_hash(structures[k])
        for k, atoms in enumerate(compact)
    ]


def neighbor_pairs(
    cart: np.ndarray, lattice: np.ndarray | None, pbc: np.ndarray | None, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre, neighbour, periodic image (int triple) and distance of every pair within ``cutoff``
    of Cartesian ``cart`` (a crystal: in its row-vector ``lattice``, periodic along ``pbc``).

    Distinct atoms at the same position are kept (distance 0); only an atom paired with
    itself in the same image is dropped.
    """
    coords = np.ascontiguousarray(cart, dtype=float)
    if lattice is not None and pbc is not None:
        pbc = np.ascontiguousarray(pbc, dtype=np.int64)
        lattice = np.ascontiguousarray(lattice, dtype=float)
    else:
        pbc = np.zeros(3, dtype=np.int64)
        lattice = np.eye(3)
    centres, neighbours, images, dists = find_points_in_spheres(
        coords, coords, r=cutoff, pbc=pbc, lattice=lattice, tol=1e-8
    )
    images = np.rint(images).astype(np.int64)
    not_self = (centres != neighbours) | np.any(images != 0, axis=1)
    return centres[not_self], neighbours[not_self], images[not_self], dists[not_self]


def _keep_nearest(centres: np.ndarray, dists: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` nearest neighbours per centre."""
    order = np.lexsort((dists, centres))
    sorted_centres = centres[order]
    first = np.searchsorted(sorted_centres, sorted_centres, side="left")
    rank = np.arange(len(order)) - first
    return order[rank < k]


def atomic_numbers(item: Structure | Molecule) -> np.ndarray:
    """Atomic numbers; raises :class:`GraphError` for disordered or unknown species."""
    z = np.empty(len(item), dtype=np.int64)
    for i, site in enumerate(item):
        species = site.species  # one Composition per site; cheaper than site.specie/is_ordered
        if len(species) != 1 or abs(species.num_atoms - 1) > 1e-8:
            raise GraphError(f"disordered site {site.species_string}; expected ordered sites")
        number = getattr(next(iter(species)), "Z", 0)
        if not 1 <= number <= MAX_Z:
            raise GraphError(
                f"unknown species {site.species_string!r} at site {i}; expected an element Z=1..{MAX_Z}"
            )
        z[i] = number
    return z


def atoms_of(item: Structure | Molecule) -> Atoms:
    """The :class:`Atoms` of a pymatgen object; raises :class:`GraphError` for disordered or
    unknown species."""
    z = atomic_numbers(item)
    if isinstance(item, Structure):
        return Atoms(z, item.cart_coords, item.lattice.matrix, np.asarray(item.pbc, dtype=np.int64))
    return Atoms(z, item.cart_coords)


def checked_atoms(item: Structure | Molecule | Atoms, params: GraphParams) -> Atoms:
    """The :class:`Atoms` of a usable item; raises :class:`GraphError` before any neighbour search.

    Catches empty items, unknown/disordered species, NaN/inf coordinates or lattice, and
    cells too small to hold their atoms ``min_distance`` apart.
    """
    if len(item.z if isinstance(item, Atoms) else item) == 0:
        raise GraphError("empty structure (no sites)")
    atoms = item if isinstance(item, Atoms) else atoms_of(item)
    if not np.all(np.isfinite(atoms.cart)):
        raise GraphError("non-finite (NaN/inf) coordinates")
    if atoms.lattice is not None:
        if not np.all(np.isfinite(atoms.lattice)):
            raise GraphError("non-finite (NaN/inf) lattice")
        volume = abs(float(np.linalg.det(atoms.lattice)))
        n = len(atoms.z)
        periodic = atoms.pbc is not None and atoms.pbc.all()
        if periodic and volume < _PACKING_VOLUME * n * params.min_distance**3:
            raise GraphError(
                f"atoms overlap: cell volume {volume:.3g} Å³ is too small for {n} atoms "
                f"at least {params.min_distance} Å apart"
            )
    return atoms


def _hash_arrays(z: np.ndarray, cart: np.ndarray, lattice: np.ndarray | None) -> str:
    h = hashlib.sha256(np.asarray(z, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(cart, dtype=np.float64), 6).tobytes())
    if lattice is not None:
        h.update(np.round(np.asarray(lattice, dtype=np.float64), 6).tobytes())
    return h.hexdigest()


def content_key(atoms: Atoms) -> str:
    """Hash of what a graph depends on: atomic numbers, coordinates (1e-6 Å), lattice."""
    if atoms.lattice is None or atoms.pbc is None:
        return _hash_arrays(atoms.z, atoms.cart, None)
    lattice = atoms.lattice if atoms.pbc.all() else np.vstack([atoms.lattice, atoms.pbc])
    return _hash_arrays(atoms.z, atoms.cart, lattice)


@cache
def _symbol_z(symbol: str) -> int:
    return Element(symbol).Z


_PERIODIC = np.ones(3, dtype=np.int64)


def compact_atoms(structures: Sequence[Structure | Molecule]) -> list[Atoms | None] | None:
    """The :class:`Atoms` of each item read from compact rows, without building pymatgen objects,
    when available.

    Sequences that expose ``columns()`` -> ``{"species", "coords", "lattice"}`` (element
    symbols; Cartesian coordinates for molecules, fractional ones plus a row-vector lattice
    for periodic crystals), as the lazy structures of dataset sources do, qualify. ``None``
    for other sequences; ``None`` entries for rows that need the full checks (unknown symbols,
    malformed rows).
    """
    columns = getattr(structures, "columns", None)
    if not callable(columns):
        return None
    rows = columns()
    out: list[Atoms | None] = []
    for species, coords, lattice in zip(rows["species"], rows["coords"], rows["lattice"], strict=True):
        try:
            z = np.array([_symbol_z(str(s)) for s in species], dtype=np.int64)
            if not (z <= MAX_Z).all():
                raise ValueError("beyond the element table")
            xyz = np.asarray(coords, dtype=np.float64).reshape(len(z), 3)
            if lattice is None:
                out.append(Atoms(z, xyz))
            else:
                matrix = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
                out.append(Atoms(z, xyz @ matrix, matrix, _PERIODIC))
        except (ValueError, TypeError):  # unknown symbol or malformed row: full checks decide
            out.append(None)
    return out


def _overlap_error(i: int, j: int, dist: float, params: GraphParams) -> GraphError:
    return GraphError(f"atoms overlap: sites {i} and {j} are {dist:.3f} Å apart (< {params.min_distance} Å)")


def _lonely_error(lonely: np.ndarray, params: GraphParams) -> GraphError:
    sites = lonely[:5].tolist()
    return GraphError(f"{len(lonely)} site(s) {sites} have no neighbour within {params.cutoff} Å")


def _dense_molecule_edges(coords: np.ndarray, z: np.ndarray, params: GraphParams) -> GraphArrays:
    """Graph of a small molecule from its distance matrix (faster than a cell list below ~200 atoms)."""
    diff = coords[:, None, :] - coords[None, :, :]
    dist = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    np.fill_diagonal(dist, np.inf)
    i, j = divmod(int(dist.argmin()), len(z))
    if dist[i, j] < params.min_distance:
        raise _overlap_error(i, j, float(dist[i, j]), params)
    within = dist <= params.cutoff
    degree = within.sum(axis=1)
    if (degree == 0).any():
        raise _lonely_error(np.flatnonzero(degree == 0), params)
    if degree.max() > params.max_neighbors:
        rank = np.argsort(np.argsort(dist, axis=1, kind="stable"), axis=1)
        within &= rank < params.max_neighbors
        within |= within.T
    dst, src = np.nonzero(within)
    return GraphArrays(z, np.stack([src, dst]).astype(np.int64), dist[dst, src].astype(np.float32))


def checked_graph_arrays(atoms: Atoms, params: GraphParams) -> GraphArrays:
    """Compact graph of the atoms of an item that passed :func:`checked_atoms`."""
    z, n = atoms.z, len(atoms.z)
    if atoms.lattice is None and n <= DENSE_MAX_ATOMS:
        return _dense_molecule_edges(np.asarray(atoms.cart, dtype=float), z, params)
    centres, neighbours, images, dists = neighbor_pairs(atoms.cart, atoms.lattice, atoms.pbc, params.cutoff)
    if len(dists) and dists.min() < params.min_distance:
        k = int(np.argmin(dists))
        raise _overlap_error(int(centres[k]), int(neighbours[k]), float(dists[k]), params)
    degree = np.bincount(centres, minlength=n)
    if (degree == 0).any():
        raise _lonely_error(np.flatnonzero(degree == 0), params)
    if degree.max() <= params.max_neighbors:
        # Nothing to cut: the full neighbour list is already symmetric.
        return GraphArrays(z, np.stack([neighbours, centres]).astype(np.int64), dists.astype(np.float32))
    keep = _keep_nearest(centres, dists, params.max_neighbors)
    # Symmetrise: the reverse of edge (j → i, image n) is (i → j, image -n); add those missing.
    src = np.concatenate([neighbours[keep], centres[keep]])
    dst = np.concatenate([centres[keep], neighbours[keep]])
    img = np.concatenate([images[keep], -images[keep]])
    dist = np.concatenate([dists[keep], dists[keep]])
    span = 2 * int(np.abs(img).max(initial=0)) + 1
    key = (src * n + dst) * span**3 + ((img + span // 2) @ np.array([span**2, span, 1]))
    _, unique = np.unique(key, return_index=True)
    return GraphArrays(
        z=z,
        edge_index=np.stack([src[unique], dst[unique]]).astype(np.int64),
        edge_dist=dist[unique].astype(np.float32),
    )


def graph_arrays(item: Structure | Molecule, params: GraphParams) -> GraphArrays:
    """Compact graph of one item; raises :class:`GraphError` with the reason when unusable."""
    return checked_graph_arrays(checked_atoms(item, params), params)


def to_data(arrays: GraphArrays, params: GraphParams, item_id: str = "") -> Data:
    """The torch-geometric graph of a compact graph (node and edge features computed here)."""
    import torch  # only graphs need torch: hashing and neighbour lists do not
    from torch_geometric.data import Data

    z, edge_index, edge_dist = arrays
    return Data(
        x=torch.from_numpy(element_table(params.node_features)[z]),
        z=torch.from_numpy(np.asarray(z, dtype=np.int64)),
        edge_index=torch.from_numpy(np.asarray(edge_index, dtype=np.int64)),
        edge_attr=torch.from_numpy(gaussian_expansion(edge_dist, params.cutoff, params.n_gaussians)),
        edge_dist=torch.from_numpy(np.asarray(edge_dist, dtype=np.float32)),
        item_id=item_id,
        num_nodes=len(z),
    )


def build_graph(item: Structure | Molecule, params: GraphParams, item_id: str = "") -> Data:
    """One graph; raises :class:`GraphError` with the reason when the item is unusable."""
    return to_data(graph_arrays(item, params), params, item_id)
