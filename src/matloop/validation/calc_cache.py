"""Results of deterministic single points shared across workspaces (SQLite in the cache directory).

A level with a ``package`` (:class:`~matloop.validation.levels.Level`) gives the same document for
the same structure with the same package version, so a campaign never reruns one: the key is
``<level>:<package>-<version>:<structure hash>``, and a new package version never reuses results.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

from pymatgen.core import Molecule, Structure

from matloop.data.graphs import structure_hashes
from matloop.validation.documents import ValidationDocument
from matloop.validation.levels import Level

_SCHEMA = "CREATE TABLE IF NOT EXISTS documents (key TEXT PRIMARY KEY, document TEXT, seconds REAL)"


class Hit(NamedTuple):
    """A stored result: the document, the seconds it took to compute and its key."""

    document: ValidationDocument
    seconds: float
    key: str


class CalculationCache:
    """Validation documents of one level keyed by package version and structure hash."""

    FILE = "calculations.sqlite"
    """Its file name in the cache directory."""

    def __init__(self, cache_dir: Path, level: Level) -> None:
        if level.package is None:
            raise ValueError(f"level {level.name!r} names no package: its results are not cached")
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"{level.name}:{level.package}-{version(level.package)}:"
        self.db = sqlite3.connect(cache_dir / self.FILE, timeout=60.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)

    def keys(self, items: Sequence[Structure | Molecule]) -> list[str]:
        """The key of each of ``items`` (hashed from compact rows, without building the structures,
        where the sequence has them: dataset slices, stored jobs)."""
        return [self.prefix + key for key in structure_hashes(items)]

    def get(self, keys: Sequence[str]) -> list[Hit | None]:
        """The stored result under each of ``keys``, or None."""
        found = self._stored(keys)
        return [
            Hit(ValidationDocument.model_validate_json(found[k][0]), found[k][1], k) if k in found else None
            for k in keys
        ]

    def held(self, items: Sequence[Structure | Molecule]) -> int:
        """How many of ``items`` the cache holds."""
        keys = self.keys(items)
        found = self._stored(keys)
        return sum(k in found for k in keys)

    def _stored(self, keys: Sequence[str]) -> dict[str, tuple[str, float]]:
        """The stored ``(document, seconds)`` of those ``keys`` the cache holds."""
        found: dict[str, tuple[str, float]] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, document, seconds FROM documents WHERE key IN ({marks})", chunk
            )
            found |= {key: (doc, seconds) for key, doc, seconds in rows}
        return found

    def put(self, results: Sequence[tuple[str, ValidationDocument, float]]) -> None:
        """Store documents under their keys (:meth:`keys`) with the seconds they took, in one
        transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                [(key, doc.model_dump_json(), seconds) for key, doc, seconds in results],
            )

    def close(self) -> None:
        self.db.close()
