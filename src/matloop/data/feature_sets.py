"""Feature sets: the compact graphs of a slice stored in a workspace (one ``.npz`` of
concatenated arrays per set, registered as a ``features`` artefact with its graph parameters),
and loaded back as torch-geometric graphs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.graphs import GraphArrays, GraphParams, to_data
from matloop.data.items import Items
from matloop.data.slices import load_slice
from matloop.workspace import Workspace, resolve_workspace

if TYPE_CHECKING:
    from torch_geometric.data import Data


@dataclass
class GraphSet:
    """Graphs loaded back from a feature set, aligned with ``ids``."""

    ids: list[str]
    graphs: list[Data]
    meta: dict[str, Any]

    def items(self, workspace: Workspace) -> Items:
        """What a surrogate reads for these graphs: the graphs and, lazily, their structures."""
        data = load_slice(workspace, self.meta["slice_id"]).subset(self.ids)
        return Items(self.graphs, data.structures, workspace.settings.cache_dir / EmbeddingCache.FILE)


def save_feature_set(workspace: Workspace, arrays: dict[str, GraphArrays], meta: dict[str, Any]) -> str:
    """Store compact graphs (id → arrays) with their ``meta`` (it must hold the graph ``params``);
    returns the new feature set's id."""

    def write(path: Path) -> None:
        graphs = list(arrays.values())
        atom_ptr = np.cumsum([0] + [len(g.z) for g in graphs])
        edge_ptr = np.cumsum([0] + [len(g.edge_dist) for g in graphs])

        def cat(parts: list[np.ndarray], dtype: type, axis: int = 0) -> np.ndarray:
            return np.concatenate(parts, axis=axis).astype(dtype) if parts else np.zeros(0, dtype)

        np.savez(
            path,
            ids=np.array(list(arrays), dtype=str),
            atom_ptr=atom_ptr,
            edge_ptr=edge_ptr,
            z=cat([g.z for g in graphs], np.int16),
            edge_index=cat([g.edge_index for g in graphs], np.int32, axis=1).reshape(2, -1),
            edge_dist=cat([g.edge_dist for g in graphs], np.float32),
        )

    return workspace.save_artifact("features", ".npz", write, meta).id


def load_graphs(feature_set_id: str, *, workspace: Workspace | str | Path | None = None) -> GraphSet:
    """Load a stored feature set as a list of ``Data`` graphs."""
    ws = resolve_workspace(workspace)
    art = ws.artifact(feature_set_id, kind="features")
    params = GraphParams(**art.meta["params"])
    with np.load(art.path) as stored:
        ids = [str(i) for i in stored["ids"]]
        atom_ptr, edge_ptr = stored["atom_ptr"], stored["edge_ptr"]
        z, edge_index, edge_dist = stored["z"], stored["edge_index"], stored["edge_dist"]
    graphs = [
        to_data(
            GraphArrays(
                z[atom_ptr[k] : atom_ptr[k + 1]].astype(np.int64),
                edge_index[:, edge_ptr[k] : edge_ptr[k + 1]].astype(np.int64),
                edge_dist[edge_ptr[k] : edge_ptr[k + 1]].copy(),
            ),
            params,
            item_id,
        )
        for k, item_id in enumerate(ids)
    ]
    return GraphSet(ids=ids, graphs=graphs, meta=art.meta)
