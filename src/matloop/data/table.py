"""A parsed dataset source as one flat table, cheap to filter, store and reload.

Every source (QM9, the bundled Materials Project sets, users' files, mp-api) is parsed
once into a :class:`SourceTable`: one row per item with its element symbols (``species``),
coordinates (fractional for crystals, Cartesian Å for molecules), lattice matrix (crystals)
and numeric property columns. Filters work on the table; pymatgen objects are built only
for the rows a caller actually touches (:class:`LazyStructures`), so a 130k-molecule source
loads in about a second. On disk a table is a parquet file whose schema metadata holds the
units, kind, source name and provenance notes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pymatgen.core import Molecule, Structure

from matloop.data.compact import LazyStructures, structure_row
from matloop.data.slices import DatasetSlice, Kind

RESERVED_COLUMNS = ("id", "species", "coords", "lattice")
_META_KEY = b"matloop"


@dataclass
class SourceTable:
    """A parsed source: ``frame`` holds ``id, species, coords, lattice`` and numeric properties."""

    frame: pd.DataFrame
    units: dict[str, str]
    kind: Kind
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False

    def __post_init__(self) -> None:
        missing = [c for c in RESERVED_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"source table lacks columns {missing}")
        if not self.frame["id"].is_unique:
            dup = self.frame["id"][self.frame["id"].duplicated()].iloc[0]
            raise ValueError(f"item ids must be unique; {dup!r} occurs more than once")
        self.frame = self.frame.reset_index(drop=True)
        for name in self.properties:
            self.units.setdefault(name, "unknown")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def properties(self) -> list[str]:
        """Property column names."""
        return [c for c in self.frame.columns if c not in RESERVED_COLUMNS]

    @property
    def ids(self) -> list[str]:
        return [str(i) for i in self.frame["id"]]

    def nsites(self) -> np.ndarray:
        """Number of sites/atoms per row."""
        return np.fromiter((len(s) for s in self.frame["species"]), dtype=np.int64, count=len(self))

    def elements(self) -> list[frozenset[str]]:
        """The set of element symbols of each row."""
        return [frozenset(s) for s in self.frame["species"]]

    @classmethod
    def from_items(
        cls,
        ids: Sequence[str],
        items: Sequence[Structure | Molecule],
        properties: pd.DataFrame,
        *,
        units: dict[str, str],
        kind: Kind,
        source: str,
        meta: dict[str, Any] | None = None,
    ) -> SourceTable:
        """A table from pymatgen objects and an aligned property frame."""
        rows = [structure_row(item) for item in items]
        frame = pd.DataFrame(
            {
                "id": [str(i) for i in ids],
                "species": [r[0] for r in rows],
                "coords": [r[1] for r in rows],
                "lattice": [r[2] for r in rows],
            }
        )
        props = properties.reset_index(drop=True).astype(np.float64)
        return cls(pd.concat([frame, props], axis=1), dict(units), kind, source, dict(meta or {}))

    def head(self, n: int | None) -> SourceTable:
        """The first ``n`` rows (all rows when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return SourceTable(
            self.frame.iloc[:n].copy(), dict(self.units), self.kind, self.source, dict(self.meta)
        )

    def to_slice(
        self, positions: Sequence[int] | np.ndarray | None = None, properties: list[str] | None = None
    ) -> DatasetSlice:
        """A :class:`DatasetSlice` of some rows (all by default) whose structures are built lazily."""
        pos = np.arange(len(self)) if positions is None else np.asarray(positions, dtype=np.int64)
        names = self.properties if properties is None else list(properties)
        props = self.frame[names].iloc[pos].reset_index(drop=True)
        return DatasetSlice(
            ids=[str(i) for i in self.frame["id"].to_numpy()[pos]],
            structures=LazyStructures(self.frame, pos),
            properties=props,
            units={n: self.units[n] for n in names},
            kind=self.kind,
            source=self.source,
            meta=dict(self.meta),
        )


def write_table(table: SourceTable, path: Path, *, compression_level: int | None = None) -> None:
    """Write a table to parquet (atomically: a temporary file is renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table.frame, preserve_index=False)
    info = {"units": table.units, "kind": table.kind, "source": table.source, "meta": table.meta}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), _META_KEY: json.dumps(info)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(arrow, tmp, compression="zstd", compression_level=compression_level)
    os.replace(tmp, path)


def read_table(path: Path) -> SourceTable:
    """Read a table written by :func:`write_table`; errors from a damaged file propagate."""
    arrow = pq.read_table(path)
    info = json.loads((arrow.schema.metadata or {})[_META_KEY])
    frame = arrow.to_pandas()
    frame["lattice"] = [None if v is None else np.asarray(v) for v in frame["lattice"]]
    return SourceTable(frame, info["units"], info["kind"], info["source"], info["meta"])


def table_info(path: Path) -> tuple[int, dict[str, Any]]:
    """Row count and stored metadata of a table file, read from its footer only."""
    parquet = pq.ParquetFile(path)
    return parquet.metadata.num_rows, json.loads(parquet.schema_arrow.metadata[_META_KEY])
