"""On-disk cache of fixed-length vectors per structure (pretrained-model embeddings) in SQLite.

Keys are ``<model>:<version>:<structure hash>``, so a new model or package version never
reuses old vectors; values are float32 bytes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_SCHEMA = "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, blob BLOB)"
_CHUNK = 500


class EmbeddingCache:
    """Vectors on disk keyed by model, version and structure hash."""

    FILE = "embeddings.sqlite"
    """Its file name in the cache directory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, timeout=60.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)
        self.db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of those keys that are present."""
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            query = f"SELECT key, blob FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
            for key, blob in self.db.execute(query, chunk):
                found[key] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put_many(self, entries: Iterable[tuple[str, np.ndarray]]) -> None:
        """Store vectors in one transaction."""
        rows = [(key, np.asarray(v, dtype=np.float32).tobytes()) for key, v in entries]
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)

    def close(self) -> None:
        self.db.close()
