"""The ``featurize`` tool: a dataset slice → a stored set of crystal/molecule graphs.

A feature set is one ``.npz`` file of concatenated compact graphs (atomic numbers, edges,
distances, with offsets per graph); node and edge features are recomputed on load from the
parameters kept in the feature set's metadata.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from pydantic import BaseModel, Field

from matloop.data.feature_sets import save_feature_set
from matloop.data.featurizer import Progress, featurize_arrays
from matloop.data.graph_cache import GraphCache
from matloop.data.graphs import GraphParams, element_table
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.settings import Settings
from matloop.workspace import Workspace, resolve_workspace

logger = logging.getLogger(__name__)

MAX_CUTOFF = 15.0
MAX_NEIGHBORS = 128
_SHOWN_FAILURES = 50


class FeaturizeFailure(BaseModel):
    item_id: str = Field(description="Dataset id of the item that was skipped.")
    reason: str = Field(description="Why it could not be turned into a graph.")


class FeaturizeResult(BaseModel):
    feature_set_id: str = Field(description="Id of the stored graph set; pass it to training and selection.")
    slice_id: str = Field(description="Slice the graphs were built from.")
    count: int = Field(description="Number of graphs built.")
    n_failed: int = Field(description="Number of items skipped.")
    failures: list[FeaturizeFailure] = Field(
        description=f"Items skipped, each with the reason (the first {_SHOWN_FAILURES})."
    )
    node_dim: int = Field(description="Node feature length.")
    edge_dim: int = Field(description="Edge feature length.")
    cutoff: float = Field(description="Neighbour cut-off radius used, in Å.")
    max_neighbors: int = Field(description="Nearest neighbours kept per atom.")
    mean_edges_per_atom: float = Field(description="Average number of edges per atom.")
    cache_hits: int = Field(description="Items served from the on-disk cache.")
    seconds: float = Field(description="Wall time of the call.")


def graph_params(
    settings: Settings, cutoff: float | None = None, max_neighbors: int | None = None
) -> GraphParams:
    """Graph parameters from the arguments and the settings; bad values → ToolInputError."""
    cfg = settings.featurize
    cutoff = cfg.cutoff if cutoff is None else cutoff
    max_neighbors = cfg.max_neighbors if max_neighbors is None else max_neighbors
    if not 0 < cutoff <= MAX_CUTOFF:
        raise ToolInputError(f"expected cutoff in (0, {MAX_CUTOFF}] Å, got {cutoff}; typical values are 4-8")
    if not 1 <= max_neighbors <= MAX_NEIGHBORS:
        raise ToolInputError(
            f"expected max_neighbors in [1, {MAX_NEIGHBORS}], got {max_neighbors}; typical values are 8-16"
        )
    return GraphParams(
        cutoff=float(cutoff),
        max_neighbors=int(max_neighbors),
        n_gaussians=cfg.n_gaussians,
        node_features=cfg.node_features,
        min_distance=settings.validation.min_distance,
    )


def featurize(
    slice_id: str,
    cutoff: float | None = None,
    max_neighbors: int | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
    progress: Progress | None = None,
) -> FeaturizeResult:
    """Turn the structures of a dataset slice into crystal graphs for the GNN.

    Items that cannot become a graph (overlapping atoms, isolated atoms, NaN coordinates,
    unknown species, empty) are skipped and reported with the reason.

    Args:
        slice_id: id returned by ``query_dataset``.
        cutoff: neighbour cut-off radius in Å (default from settings, 6 Å).
        max_neighbors: nearest neighbours kept per atom (default from settings, 12).
    """
    start = time.perf_counter()
    ws = resolve_workspace(workspace)
    params = graph_params(ws.settings, cutoff, max_neighbors)
    data = load_slice(ws, slice_id)
    logger.info("featurizing %d %s items of %s (%s)", len(data), data.kind, slice_id, params)
    with GraphCache(ws.settings.cache_dir / "graphs.sqlite") as cache:
        arrays, failures, hits = featurize_arrays(
            data.structures, data.ids, params, cache=cache, progress=progress
        )
    n_atoms = sum(len(a.z) for a in arrays.values())
    n_edges = sum(len(a.edge_dist) for a in arrays.values())
    node_dim = int(element_table(params.node_features).shape[1]) if arrays else 0
    edge_dim = params.n_gaussians if arrays else 0
    meta = {
        "slice_id": slice_id,
        "count": len(arrays),
        "params": asdict(params),
        "node_dim": node_dim,
        "edge_dim": edge_dim,
        "kind": data.kind,
        "failures": [f._asdict() for f in failures],
    }
    feature_set_id = save_feature_set(ws, arrays, meta)
    seconds = time.perf_counter() - start
    logger.info("feature set %s: %d graphs in %.1f s", feature_set_id, len(arrays), seconds)
    return FeaturizeResult(
        feature_set_id=feature_set_id,
        slice_id=slice_id,
        count=len(arrays),
        n_failed=len(failures),
        failures=[FeaturizeFailure(item_id=f.item_id, reason=f.reason) for f in failures[:_SHOWN_FAILURES]],
        node_dim=node_dim,
        edge_dim=edge_dim,
        cutoff=params.cutoff,
        max_neighbors=params.max_neighbors,
        mean_edges_per_atom=n_edges / max(n_atoms, 1),
        cache_hits=hits,
        seconds=round(seconds, 3),
    )
