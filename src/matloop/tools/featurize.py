"""The ``featurize`` tool: a dataset slice → a stored set of crystal/molecule graphs."""

from __future__ import annotations

import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch_geometric.data import Data

from matloop.data.graphs import GraphError, GraphParams, build_graph, structure_hash
from matloop.data.slices import load_slice
from matloop.workspace import Workspace, resolve_workspace

_GRAPH_FIELDS = ("x", "z", "edge_index", "edge_attr", "edge_dist")


class FeaturizeFailure(BaseModel):
    item_id: str = Field(description="Dataset id of the item that was skipped.")
    reason: str = Field(description="Why it could not be turned into a graph.")


class FeaturizeResult(BaseModel):
    feature_set_id: str = Field(description="Id of the stored graph set; pass it to training and selection.")
    slice_id: str = Field(description="Slice the graphs were built from.")
    count: int = Field(description="Number of graphs built.")
    failures: list[FeaturizeFailure] = Field(description="Items skipped, each with the reason.")
    node_dim: int = Field(description="Node feature length.")
    edge_dim: int = Field(description="Edge feature length.")
    mean_edges_per_atom: float = Field(description="Average number of edges per atom.")
    cache_hits: int = Field(description="Graphs served from the on-disk cache.")


@dataclass
class GraphSet:
    """Graphs loaded back from a feature set, aligned with ``ids``."""

    ids: list[str]
    graphs: list[Data]
    meta: dict[str, Any]


def _to_bytes(graph: Data) -> bytes:
    buf = io.BytesIO()
    torch.save({k: graph[k] for k in _GRAPH_FIELDS}, buf)
    return buf.getvalue()


def _from_bytes(blob: bytes, item_id: str) -> Data:
    tensors = torch.load(io.BytesIO(blob), weights_only=True)
    return Data(**tensors, item_id=item_id, num_nodes=int(tensors["z"].numel()))


class GraphCache:
    """Graphs on disk keyed by structure hash + featurizer parameters (one SQLite file)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS graphs (key TEXT PRIMARY KEY, blob BLOB)")

    def get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT blob FROM graphs WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, blob: bytes) -> None:
        self.db.execute("INSERT OR REPLACE INTO graphs VALUES (?, ?)", (key, blob))

    def close(self) -> None:
        self.db.commit()
        self.db.close()


def featurize(
    slice_id: str,
    cutoff: float | None = None,
    max_neighbors: int | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
) -> FeaturizeResult:
    """Turn the structures of a dataset slice into crystal graphs for the GNN.

    Args:
        slice_id: id returned by ``query_dataset``.
        cutoff: neighbour cut-off radius in Å (default from settings, 6 Å).
        max_neighbors: nearest neighbours kept per atom (default from settings, 12).
    """
    ws = resolve_workspace(workspace)
    cfg = ws.settings.featurize
    params = GraphParams(
        cutoff=cutoff or cfg.cutoff,
        max_neighbors=max_neighbors or cfg.max_neighbors,
        n_gaussians=cfg.n_gaussians,
        node_features=cfg.node_features,
        min_distance=ws.settings.validation.min_distance,
    )
    data = load_slice(ws, slice_id)
    cache = GraphCache(ws.settings.cache_dir / "graphs.sqlite")
    blobs: dict[str, bytes] = {}
    failures: list[FeaturizeFailure] = []
    hits = 0
    try:
        for item_id, item in zip(data.ids, data.structures, strict=True):
            key = f"{structure_hash(item)}:{params.key()}"
            blob = cache.get(key)
            if blob is not None:
                hits += 1
            else:
                try:
                    blob = _to_bytes(build_graph(item, params, item_id))
                except GraphError as exc:
                    failures.append(FeaturizeFailure(item_id=item_id, reason=str(exc)))
                    continue
                cache.put(key, blob)
            blobs[item_id] = blob
    finally:
        cache.close()
    feature_set_id = ws.new_id("features")
    path = ws.dir("features") / f"{feature_set_id}.pt"
    graphs = [_from_bytes(b, i) for i, b in blobs.items()]
    node_dim = graphs[0].x.shape[1] if graphs else 0
    edge_dim = graphs[0].edge_attr.shape[1] if graphs else 0
    n_edges = sum(g.edge_index.shape[1] for g in graphs)
    n_atoms = sum(g.num_nodes for g in graphs)
    torch.save({"ids": list(blobs), "blobs": list(blobs.values())}, path)
    meta = {
        "slice_id": slice_id,
        "count": len(graphs),
        "params": params.__dict__,
        "node_dim": node_dim,
        "edge_dim": edge_dim,
        "kind": data.kind,
    }
    ws.register("features", feature_set_id, path, meta)
    return FeaturizeResult(
        feature_set_id=feature_set_id,
        slice_id=slice_id,
        count=len(graphs),
        failures=failures,
        node_dim=node_dim,
        edge_dim=edge_dim,
        mean_edges_per_atom=n_edges / max(n_atoms, 1),
        cache_hits=hits,
    )


def load_graphs(feature_set_id: str, *, workspace: Workspace | str | Path | None = None) -> GraphSet:
    """Load a stored feature set as a list of ``Data`` graphs."""
    ws = resolve_workspace(workspace)
    art = ws.artifact(feature_set_id, kind="features")
    stored = torch.load(art.path, weights_only=True)
    graphs = [_from_bytes(b, i) for i, b in zip(stored["ids"], stored["blobs"], strict=True)]
    return GraphSet(ids=list(stored["ids"]), graphs=graphs, meta=art.meta)
