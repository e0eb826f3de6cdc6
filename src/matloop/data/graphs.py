"""Crystal and molecule graphs: pymatgen neighbour lists → torch-geometric ``Data``.

Each graph carries
``x`` (float32, [n_atoms, node_dim]) element embedding per atom,
``z`` (int64, [n_atoms]) atomic numbers,
``edge_index`` (int64, [2, n_edges]) source → target, symmetric,
``edge_attr`` (float32, [n_edges, n_gaussians]) Gaussian expansion of the distance,
``edge_dist`` (float32, [n_edges]) distances in Å,
and ``item_id`` (str) the dataset id it came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import torch
from pymatgen.core import Element, Molecule, Structure
from torch_geometric.data import Data

MAX_Z = 100


@dataclass(frozen=True)
class GraphParams:
    """Everything that changes a graph; hashed into the cache key."""

    cutoff: float = 6.0
    max_neighbors: int = 12
    n_gaussians: int = 40
    node_features: str = "onehot+magpie"
    min_distance: float = 0.5

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class GraphError(ValueError):
    """An item that cannot become a graph; the message is the per-item reason."""


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
    """Magpie element descriptors (``elementembeddings``), standardised per column."""
    from elementembeddings.core import Embedding

    emb = Embedding.load_data("magpie")
    dim = len(next(iter(emb.embeddings.values())))
    table = np.full((MAX_Z + 1, dim), np.nan, dtype=np.float64)
    for symbol, vec in emb.embeddings.items():
        try:
            table[Element(symbol).Z] = vec
        except ValueError:
            continue
    mean = np.nanmean(table, axis=0)
    std = np.nanstd(table, axis=0)
    std[std == 0] = 1.0
    table = (table - mean) / std
    return np.nan_to_num(table, nan=0.0).astype(np.float32)


def gaussian_expansion(dist: np.ndarray, cutoff: float, n: int) -> np.ndarray:
    """exp(-(d - μ_k)² / σ²) on ``n`` centres evenly spaced in [0, cutoff], σ = spacing."""
    centres = np.linspace(0.0, cutoff, n)
    width = centres[1] - centres[0]
    return np.exp(-(((dist[:, None] - centres[None, :]) / width) ** 2)).astype(np.float32)


def structure_hash(item: Structure | Molecule) -> str:
    """Content hash of species, coordinates (1e-6 Å) and lattice."""
    h = hashlib.sha256()
    h.update(" ".join(site.species_string for site in item).encode())
    h.update(np.round(item.cart_coords, 6).tobytes())
    if isinstance(item, Structure):
        h.update(np.round(item.lattice.matrix, 6).tobytes())
    return h.hexdigest()


def _neighbor_pairs(
    item: Structure | Molecule, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre, neighbour, periodic image (int triple) and distance of every pair within ``cutoff``."""
    if isinstance(item, Structure):
        centres, neighbours, images, dists = item.get_neighbor_list(r=cutoff)
        return centres.astype(np.int64), neighbours.astype(np.int64), np.rint(images).astype(np.int64), dists
    coords = item.cart_coords
    dmat = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    np.fill_diagonal(dmat, np.inf)
    centres, neighbours = np.nonzero(dmat <= cutoff)
    return centres, neighbours, np.zeros((len(centres), 3), dtype=np.int64), dmat[centres, neighbours]


def _keep_nearest(centres: np.ndarray, dists: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` nearest neighbours per centre."""
    order = np.lexsort((dists, centres))
    sorted_centres = centres[order]
    first = np.searchsorted(sorted_centres, sorted_centres, side="left")
    rank = np.arange(len(order)) - first
    return order[rank < k]


def check_item(item: Structure | Molecule, params: GraphParams) -> None:
    """Raise :class:`GraphError` for an item that would give a meaningless graph."""
    if len(item) == 0:
        raise GraphError("empty structure (no sites)")
    if not np.all(np.isfinite(item.cart_coords)):
        raise GraphError("non-finite (NaN/inf) coordinates")
    for site in item:
        if not site.is_ordered:
            raise GraphError(f"disordered site {site.species_string}; expected ordered sites")
        z = site.specie.Z if hasattr(site.specie, "Z") else 0
        if not 1 <= z <= MAX_Z:
            raise GraphError(f"unknown species {site.species_string!r}; expected an element Z=1..{MAX_Z}")


def build_graph(item: Structure | Molecule, params: GraphParams, item_id: str = "") -> Data:
    """One graph; raises :class:`GraphError` with the reason when the item is unusable."""
    check_item(item, params)
    centres, neighbours, images, dists = _neighbor_pairs(item, params.cutoff)
    if len(dists) and dists.min() < params.min_distance:
        raise GraphError(f"atoms overlap: closest pair {dists.min():.3f} Å < {params.min_distance} Å")
    if len(item) > 1 and len(np.unique(centres)) < len(item):
        lonely = sorted(set(range(len(item))) - set(centres.tolist()))
        raise GraphError(f"sites {lonely[:5]} have no neighbour within {params.cutoff} Å")
    keep = _keep_nearest(centres, dists, params.max_neighbors)
    # Symmetrise: the reverse of edge (i → j, image n) is (j → i, image -n); add those missing.
    src = np.concatenate([neighbours[keep], centres[keep]])
    dst = np.concatenate([centres[keep], neighbours[keep]])
    img = np.concatenate([images[keep], -images[keep]])
    dist = np.concatenate([dists[keep], dists[keep]])
    _, unique = np.unique(np.column_stack([src, dst, img]), axis=0, return_index=True)
    edge_index, edge_dist = np.stack([src[unique], dst[unique]]), dist[unique]
    z = np.array([site.specie.Z for site in item], dtype=np.int64)
    return Data(
        x=torch.from_numpy(element_table(params.node_features)[z]),
        z=torch.from_numpy(z),
        edge_index=torch.from_numpy(edge_index.astype(np.int64)),
        edge_attr=torch.from_numpy(gaussian_expansion(edge_dist, params.cutoff, params.n_gaussians)),
        edge_dist=torch.from_numpy(edge_dist.astype(np.float32)),
        item_id=item_id,
        num_nodes=len(item),
    )
