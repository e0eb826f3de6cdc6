"""Feature sets: the compact graphs of a slice stored in a workspace (one ``.npz`` of
concatenated arrays per set, registered as a ``features`` artefact with its graph parameters),
and loaded back as torch-geometric graphs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from matloop.data.embedding_cache import EmbeddingCache
from matloop.data.graphs import GraphArrays, GraphParams, to_data
from matloop.data.items import Items
from matloop.data.slices import load_slice
from matloop.workspace import Workspace, resolve_workspace

if TYPE_CHECKING:
    from torch_geometric.data import Data


class StoredGraphs(Sequence["Data"]):
    """The graphs of a feature set, each built when it is read (node and edge features with it):
    the concatenated arrays are all that stays in memory, so a pool of 100,000 items never holds
    its torch graphs at once. ``take`` gives a view of some of them."""

    def __init__(self, ids: list[str], arrays: dict[str, np.ndarray], params: GraphParams) -> None:
        self.ids, self.arrays, self.params = ids, arrays, params

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, k: int) -> Data: ...
    @overload
    def __getitem__(self, k: slice) -> list[Data]: ...
    def __getitem__(self, k: int | slice) -> Data | list[Data]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        a, stored = self.arrays, self.ids[k]
        k = int(a["order"][k])
        atoms, edges = (
            slice(a["atom_ptr"][k], a["atom_ptr"][k + 1]),
            slice(a["edge_ptr"][k], a["edge_ptr"][k + 1]),
        )
        graph = GraphArrays(
            a["z"][atoms].astype(np.int64),
            a["edge_index"][:, edges].astype(np.int64),
            a["edge_dist"][edges].copy(),
        )
        return to_data(graph, self.params, stored)

    def take(self, positions: Sequence[int]) -> StoredGraphs:
        """The graphs at ``positions``, in that order (nothing built)."""
        order = self.arrays["order"][np.asarray(positions, dtype=np.int64)]
        return StoredGraphs(
            [self.ids[int(k)] for k in positions], self.arrays | {"order": order}, self.params
        )

    def atomic_numbers(self) -> list[np.ndarray]:
        """Each graph's atomic numbers (no graph built)."""
        z, ptr = self.arrays["z"], self.arrays["atom_ptr"]
        return [z[ptr[k] : ptr[k + 1]].astype(np.int64) for k in self.arrays["order"]]


def atomic_numbers(graphs: Sequence[Data]) -> list[np.ndarray]:
    """The atomic numbers of each graph (read from the stored arrays when the graphs are stored)."""
    if isinstance(graphs, StoredGraphs):
        return graphs.atomic_numbers()
    return [g.z.numpy() for g in graphs]


@dataclass
class GraphSet:
    """Graphs loaded back from a feature set, aligned with ``ids``."""

    ids: list[str]
    graphs: Sequence[Data]
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
    """A stored feature set; its graphs are built as they are read (:class:`StoredGraphs`)."""
    ws = resolve_workspace(workspace)
    art = ws.artifact(feature_set_id, kind="features")
    with np.load(art.path) as stored:
        arrays = {k: stored[k] for k in ("atom_ptr", "edge_ptr", "z", "edge_index", "edge_dist")}
        ids = [str(i) for i in stored["ids"]]
    graphs = StoredGraphs(ids, arrays | {"order": np.arange(len(ids))}, GraphParams(**art.meta["params"]))
    return GraphSet(ids=ids, graphs=graphs, meta=art.meta)
