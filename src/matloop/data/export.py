"""A slice written out for other programs: CSV, a folder of CIF files, or JSON (this module
imports nothing heavy at load, so that the command line reads its formats quickly).

Every format carries the item id, its reduced formula, its structure and its property values;
the CSV and the CIF folder read back in with ``query_dataset("table" / "cif_folder", path=...)``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from matloop.errors import ToolInputError, invalid_choice

if TYPE_CHECKING:
    from matloop.data.slices import DatasetSlice

ExportFormat = Literal["csv", "cif", "json"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
#: File names of the CIF folder: one ``<id>.cif`` per crystal, characters other than these replaced.
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _value(x: Any) -> Any:
    """A property value for JSON: NaN (unlabelled) becomes null."""
    return None if isinstance(x, float) and math.isnan(x) else x


def slice_records(data: DatasetSlice) -> list[dict[str, Any]]:
    """One dict per item: ``id``, ``formula``, ``structure`` (pymatgen ``as_dict``) and ``properties``."""
    rows = data.properties.to_dict(orient="records")
    return [
        {
            "id": item_id,
            "formula": formula,
            "structure": structure.as_dict(),
            "properties": {k: _value(v) for k, v in row.items()},
        }
        for item_id, formula, structure, row in zip(
            data.ids, data.formulas(), data.structures, rows, strict=True
        )
    ]


def export_slice(data: DatasetSlice, fmt: str, out: str | Path) -> Path:
    """Write ``data`` to ``out`` as ``fmt`` and return the path written.

    Args:
        data: the slice.
        fmt: "csv" (columns id, formula, the properties, structure as pymatgen JSON), "cif" (a
            folder ``out`` with one ``<id>.cif`` per crystal and ``labels.csv`` with the ids and
            properties) or "json" (a list of {id, formula, structure, properties}).
        out: the file (csv, json) or folder (cif) to write; a folder must be empty or new.
    """
    if fmt not in EXPORT_FORMATS:
        raise invalid_choice("an export format", fmt, EXPORT_FORMATS)
    out = Path(out)
    table = data.properties.reset_index(drop=True)
    table.insert(0, "formula", data.formulas())
    table.insert(0, "id", data.ids)
    if fmt == "json":
        out.write_text(json.dumps(slice_records(data)))
    elif fmt == "csv":
        table["structure"] = [json.dumps(s.as_dict()) for s in data.structures]
        table.to_csv(out, index=False)
    else:
        if data.kind != "crystal":
            raise ToolInputError(f"expected a slice of crystals for CIF, got {data.kind}s (use csv or json)")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ToolInputError(f"expected a new or empty folder for CIF files, got {str(out)!r}")
        out.mkdir(parents=True, exist_ok=True)
        stems = [_UNSAFE.sub("_", item_id) for item_id in data.ids]
        if len(set(stems)) != len(stems):
            raise ToolInputError(
                "expected ids that make distinct file names, got ids differing only in symbols"
            )
        for stem, structure in zip(stems, data.structures, strict=True):
            (out / f"{stem}.cif").write_text(structure.to(fmt="cif"))
        table.assign(id=stems).to_csv(out / "labels.csv", index=False)
    return out
