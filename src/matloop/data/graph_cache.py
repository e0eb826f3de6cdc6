"""On-disk cache of compact graphs (and of per-item failure reasons) in one SQLite file.

Keys are ``<structure hash>:<parameter hash>``; values are the bytes of a
:class:`~matloop.data.graphs.GraphArrays` or, for an item that cannot become a graph, the
reason. Reads and writes go in batches (one query per few hundred keys, one transaction per
write batch) so that a 10k-item second call costs well under a second.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from matloop.data.graphs import GraphArrays

_SCHEMA = "CREATE TABLE IF NOT EXISTS graph_arrays (key TEXT PRIMARY KEY, blob BLOB, reason TEXT)"
_CHUNK = 500


def encode(arrays: GraphArrays) -> bytes:
    """Bytes of a compact graph: [n_atoms, n_edges] int64, z int16, edge_index int32, dist float32."""
    z, edge_index, edge_dist = arrays
    header = np.array([len(z), edge_dist.size], dtype=np.int64)
    return b"".join(
        a.tobytes()
        for a in (header, z.astype(np.int16), edge_index.astype(np.int32), edge_dist.astype(np.float32))
    )


def decode(blob: bytes) -> GraphArrays:
    """Inverse of :func:`encode` (writable arrays)."""
    n, e = (int(v) for v in np.frombuffer(blob, dtype=np.int64, count=2))
    offset = 16
    z = np.frombuffer(blob, dtype=np.int16, count=n, offset=offset).astype(np.int64)
    offset += 2 * n
    edge_index = np.frombuffer(blob, dtype=np.int32, count=2 * e, offset=offset).astype(np.int64)
    offset += 8 * e
    edge_dist = np.frombuffer(blob, dtype=np.float32, count=e, offset=offset).copy()
    return GraphArrays(z, edge_index.reshape(2, e), edge_dist)


class GraphCache:
    """Compact graphs on disk keyed by structure hash + featurizer parameters."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, GraphArrays | str]:
        """Cached graphs (or failure reasons) of those keys that are present."""
        found: dict[str, GraphArrays | str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            query = f"SELECT key, blob, reason FROM graph_arrays WHERE key IN ({','.join('?' * len(chunk))})"
            for key, blob, reason in self.db.execute(query, chunk):
                found[key] = reason if blob is None else decode(blob)
        return found

    def put_many(self, entries: Iterable[tuple[str, GraphArrays | str]]) -> None:
        """Store graphs (or failure reasons) in one transaction."""
        rows = [
            (key, None, value) if isinstance(value, str) else (key, encode(value), None)
            for key, value in entries
        ]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO graph_arrays VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> GraphCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
