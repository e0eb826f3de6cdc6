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

from pymatgen.core import Molecule, Structure

from matloop.data.graphs import structure_hash, structure_hashes
from matloop.validation.documents import ValidationDocument
from matloop.validation.levels import Level

_SCHEMA = "CREATE TABLE IF NOT EXISTS documents (key TEXT PRIMARY KEY, document TEXT, seconds REAL)"


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

    def key(self, item: Structure | Molecule) -> str:
        return self.prefix + structure_hash(item)

    def get(self, item: Structure | Molecule) -> tuple[ValidationDocument, float] | None:
        """The stored document of ``item`` and the seconds it took to compute, or None."""
        row = self.db.execute("SELECT document, seconds FROM documents WHERE key = ?", (self.key(item),))
        found = row.fetchone()
        return None if found is None else (ValidationDocument.model_validate_json(found[0]), found[1])

    def held(self, items: Sequence[Structure | Molecule]) -> int:
        """How many of ``items`` the cache holds (a whole pool's rows are hashed without building
        their structures where the sequence allows it)."""
        keys = [self.prefix + key for key in structure_hashes(items)]
        found = 0
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            row = self.db.execute(f"SELECT COUNT(*) FROM documents WHERE key IN ({marks})", chunk)
            found += row.fetchone()[0]
        return found

    def put(self, item: Structure | Molecule, doc: ValidationDocument, seconds: float) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                (self.key(item), doc.model_dump_json(), seconds),
            )

    def close(self) -> None:
        self.db.close()
