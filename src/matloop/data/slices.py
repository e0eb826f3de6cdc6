"""Dataset slices: a table of structures (or molecules) with property columns, stored by id.

A slice is the unit that tools pass around: ``query_dataset`` makes one, ``featurize`` turns
one into graphs, validation labels are written back as a new one. On disk it is a parquet
file (structures as pymatgen JSON) registered in the workspace with its units and provenance.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Molecule, Structure

from matloop.data.compact import STRUCTURE_COLUMNS, LazyStructures
from matloop.workspace import Workspace

Kind = Literal["crystal", "molecule"]


@dataclass
class DatasetSlice:
    """Structures with aligned property values; ``properties`` is indexed by ``ids``.

    ``structures`` may be a lazy sequence (see :class:`matloop.data.compact.LazyStructures`).
    """

    ids: list[str]
    structures: Sequence[Structure | Molecule]
    properties: pd.DataFrame
    units: dict[str, str]
    kind: Kind
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.structures) or len(self.ids) != len(self.properties):
            raise ValueError(
                f"ids ({len(self.ids)}), structures ({len(self.structures)}) and properties "
                f"({len(self.properties)}) must have the same length"
            )
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("slice ids must be unique")
        self.properties = self.properties.set_axis(self.ids, axis=0)

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: list[str]) -> DatasetSlice:
        """The rows with these ids, in this order."""
        pos = {i: k for k, i in enumerate(self.ids)}
        rows = [pos[i] for i in ids]
        structures = self.structures
        return DatasetSlice(
            ids=list(ids),
            structures=structures.take(rows)
            if isinstance(structures, LazyStructures)
            else [structures[k] for k in rows],
            properties=self.properties.iloc[rows].copy(),
            units=dict(self.units),
            kind=self.kind,
            source=self.source,
            meta=dict(self.meta),
        )

    def formulas(self) -> list[str]:
        """The reduced formula of every item (read from the stored species of a lazy sequence,
        without building its structures)."""
        if isinstance(self.structures, LazyStructures):
            return [
                Composition(Counter(species)).reduced_formula
                for species in self.structures.columns()["species"]
            ]
        return [s.composition.reduced_formula for s in self.structures]

    def target(self, name: str) -> np.ndarray:
        """One property column as float64 (NaN where unlabelled)."""
        return self.properties[name].to_numpy(dtype=np.float64)


def save_slice(workspace: Workspace, data: DatasetSlice, *, slice_id: str | None = None) -> str:
    """Write a slice to the workspace and register it; returns its id.

    Structures are stored as pymatgen JSON, or as compact arrays when they come from a
    dataset source (:class:`~matloop.data.compact.LazyStructures`), which loses nothing there.
    """
    table = data.properties.reset_index(drop=True).copy()
    if isinstance(data.structures, LazyStructures):
        structure_format = "arrays"
        for name, values in reversed(data.structures.columns().items()):
            table.insert(0, name, values)
    else:
        structure_format = "pymatgen-json"
        table.insert(0, "structure", [json.dumps(s.as_dict()) for s in data.structures])
    table.insert(0, "id", data.ids)
    meta = {
        "count": len(data),
        "kind": data.kind,
        "source": data.source,
        "units": data.units,
        "properties": list(data.properties.columns),
        **data.meta,
        "structure_format": structure_format,
    }
    return workspace.save_artifact(
        "slice", ".parquet", lambda path: table.to_parquet(path, index=False), meta, artifact_id=slice_id
    ).id


def load_slice(workspace: Workspace, slice_id: str, item_ids: Sequence[str] | None = None) -> DatasetSlice:
    """Read a slice back: all of it, or only the rows of ``item_ids`` in their order (ids the
    slice lacks are left out), read without decoding the others. Unknown slice ids raise a
    :class:`~matloop.errors.ToolInputError`."""
    art = workspace.artifact(slice_id, kind="slice")
    if item_ids is None:
        table = pd.read_parquet(art.path)
    else:
        wanted = list(dict.fromkeys(str(i) for i in item_ids))
        table = pd.read_parquet(art.path, filters=[("id", "in", wanted)] if wanted else None)
        position = {str(i): k for k, i in enumerate(table["id"])}
        table = table.take([position[i] for i in wanted if i in position]).reset_index(drop=True)
    structures: Sequence[Structure | Molecule]
    if art.meta.get("structure_format") == "arrays":
        structures = LazyStructures(table, np.arange(len(table)))
        props = table.drop(columns=["id", *STRUCTURE_COLUMNS])
    else:
        cls = Molecule if art.meta["kind"] == "molecule" else Structure
        structures = [cls.from_dict(json.loads(s)) for s in table["structure"]]
        props = table.drop(columns=["id", "structure"])
    reserved = {"count", "kind", "source", "units", "properties", "structure_format"}
    meta = {k: v for k, v in art.meta.items() if k not in reserved}
    return DatasetSlice(
        ids=[str(i) for i in table["id"]],
        structures=structures,
        properties=props,
        units=art.meta["units"],
        kind=art.meta["kind"],
        source=art.meta["source"],
        meta=meta,
    )
