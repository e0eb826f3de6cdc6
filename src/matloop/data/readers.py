"""Readers for users' own datasets: matbench JSON, CSV/JSON tables, CIF folders, ASE databases.

Each reader returns a :class:`~matloop.data.table.SourceTable`. Rows whose structure cannot be
read are skipped and counted (``meta["skipped"]``, first reasons in ``meta["skip_reasons"]``);
a file that cannot be used at all raises :class:`~matloop.errors.ToolInputError`.

Units come from the column header when written ``name [unit]`` or ``name (unit)`` (with a space
before the bracket); otherwise they are ``"unknown"``. Non-numeric columns are ignored
(``meta["ignored_columns"]``).
"""

from __future__ import annotations

import ast
import gzip
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Molecule, Structure

from matloop.data.slices import Kind
from matloop.data.table import SourceTable
from matloop.errors import ToolInputError

STRUCTURE_COLUMNS = ("structure", "structures", "cif", "poscar")
ID_COLUMNS = ("id", "material_id", "mpid", "name", "filename")
_UNIT_HEADER = re.compile(r"^(?P<name>.*\S)\s+[\[(](?P<unit>[^\[\]()]+)[\])]$")
_MAX_REASONS = 5


def parse_structure(value: Any) -> Structure | Molecule:
    """A structure or molecule from a pymatgen dict (or its JSON/Python-literal text), CIF or POSCAR."""
    if isinstance(value, Structure | Molecule):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = ast.literal_eval(text)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fmt: Literal["cif", "poscar"] = "cif" if "_cell_length_a" in text else "poscar"
                return Structure.from_str(text, fmt=fmt)
    if isinstance(value, dict):
        is_molecule = value.get("@class") == "Molecule" or "lattice" not in value
        return Molecule.from_dict(value) if is_molecule else Structure.from_dict(value)
    raise ValueError(f"cannot read a structure from a {type(value).__name__}")


def _kind_of(items: Iterable[Structure | Molecule], path: Path) -> Kind:
    kinds = {"crystal" if isinstance(s, Structure) else "molecule" for s in items}
    if len(kinds) > 1:
        raise ToolInputError(f"expected only crystals or only molecules in {path.name}, got both")
    return "molecule" if kinds == {"molecule"} else "crystal"


def _find_column(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _numeric_properties(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """Numeric columns (bools as 0/1) renamed from ``name [unit]``, their units, ignored columns."""
    props, units, ignored = {}, {}, []
    for column in frame.columns:
        values = frame[column]
        if values.dtype == bool:
            values = values.astype(np.float64)
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() < values.notna().sum() or numeric.notna().sum() == 0:
            ignored.append(str(column))
            continue
        match = _UNIT_HEADER.match(str(column))
        name, unit = (match["name"], match["unit"].strip()) if match else (str(column), "unknown")
        props[name] = numeric.to_numpy(dtype=np.float64)
        units[name] = unit
    return pd.DataFrame(props, index=range(len(frame))), units, ignored


def _build_table(
    rows: Sequence[tuple[str, Callable[[], Structure | Molecule]]],
    properties: pd.DataFrame,
    units: dict[str, str],
    *,
    path: Path,
    source: str,
    meta: dict[str, Any],
) -> SourceTable:
    """Parse each row's structure (skipping failures with their reasons) into a table."""
    ids = pd.Series([r[0] for r in rows])
    if not ids.is_unique:
        raise ToolInputError(
            f"expected unique ids in {path.name}, got {ids[ids.duplicated()].iloc[0]!r} twice"
        )
    kept, items, reasons = [], [], []
    for k, (item_id, parse) in enumerate(rows):
        try:
            item = parse()
            if not item.is_ordered:
                raise ValueError("disordered sites (partial occupancies) are not supported")
        except Exception as exc:
            reasons.append(f"{item_id}: {type(exc).__name__}: {exc}"[:200])
            continue
        kept.append(k)
        items.append(item)
    if not items:
        first = reasons[0] if reasons else "no rows"
        raise ToolInputError(f"expected readable structures in {path}, got none ({first})")
    if reasons:
        meta = {**meta, "skipped": len(reasons), "skip_reasons": reasons[:_MAX_REASONS]}
    return SourceTable.from_items(
        [rows[k][0] for k in kept],
        items,
        properties.iloc[kept],
        units=units,
        kind=_kind_of(items, path),
        source=source,
        meta={"path": str(path), **meta},
    )


def _ids(frame: pd.DataFrame, stem: str, index: Iterable[Any] | None = None) -> tuple[list[str], str | None]:
    column = _find_column(frame.columns, ID_COLUMNS)
    if column is not None:
        return [str(v) for v in frame[column]], column
    if index is not None:
        return [str(v) for v in index], None
    return [f"{stem}-{k}" for k in range(len(frame))], None


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _load_json(path: Path) -> Any:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ToolInputError(f"expected a JSON file, got {path.name} that cannot be parsed ({exc})") from exc


def _frame_from_json(data: Any, path: Path) -> tuple[pd.DataFrame, list[Any] | None]:
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"]), data.get("index")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return pd.DataFrame(data), None
    if isinstance(data, dict) and data and all(isinstance(v, list | dict) for v in data.values()):
        frame = pd.DataFrame(data)
        return frame, list(frame.index) if not isinstance(frame.index, pd.RangeIndex) else None
    raise ToolInputError(
        f"expected a JSON table in {path.name} ({{index, columns, data}}, a list of records or a dict of "
        "columns), got something else"
    )


def _read_csv(path: Path) -> pd.DataFrame:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as handle:
        lines = 0
        for line in handle:
            if not line.startswith("#"):
                break
            lines += 1
    try:
        return pd.read_csv(path, skiprows=lines)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ToolInputError(f"expected a CSV table, got {path.name} that cannot be parsed ({exc})") from exc


def _table_from_frame(
    frame: pd.DataFrame, index: list[Any] | None, path: Path, source: str, max_rows: int | None
) -> SourceTable:
    frame = frame.iloc[:max_rows] if max_rows is not None else frame
    column = _find_column(frame.columns, STRUCTURE_COLUMNS)
    if column is None:
        raise ToolInputError(
            f"expected a structure column named one of {list(STRUCTURE_COLUMNS)} in {path.name}, "
            f"got columns {[str(c) for c in frame.columns]}"
        )
    ids, id_column = _ids(frame, _stem(path), index[: len(frame)] if index is not None else None)
    rest = frame.drop(columns=[c for c in (column, id_column) if c is not None])
    properties, units, ignored = _numeric_properties(rest)
    values = frame[column].tolist()
    rows = [(i, partial(parse_structure, v)) for i, v in zip(ids, values, strict=True)]
    meta = {"ignored_columns": ignored} if ignored else {}
    return _build_table(rows, properties, units, path=path, source=source, meta=meta)


def read_matbench(path: Path, max_rows: int | None = None) -> SourceTable:
    """A matbench/matminer JSON(.gz) file: ``{"index", "columns", "data"}`` with structure dicts."""
    data = _load_json(path)
    if not (isinstance(data, dict) and {"columns", "data"} <= set(data)):
        raise ToolInputError(
            f"expected a matbench JSON object with keys index, columns, data in {path.name}, "
            f"got {sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    frame, index = _frame_from_json(data, path)
    return _table_from_frame(frame, index, path, "matbench", max_rows)


def read_table_file(path: Path, max_rows: int | None = None) -> SourceTable:
    """A CSV or JSON table with a structure column (CIF text, POSCAR text or pymatgen dict)."""
    if path.name.endswith((".json", ".json.gz")):
        frame, index = _frame_from_json(_load_json(path), path)
    elif path.name.endswith((".csv", ".csv.gz")):
        frame, index = _read_csv(path), None
    else:
        raise ToolInputError(f"expected a .csv or .json(.gz) file, got {path.name!r}")
    return _table_from_frame(frame, index, path, "table", max_rows)


def _labels_file(folder: Path) -> Path | None:
    for name in ("labels.csv", "id_prop.csv"):
        if (folder / name).is_file():
            return folder / name
    csvs = sorted(folder.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def _read_labels(file: Path, stems: set[str]) -> tuple[pd.DataFrame, str]:
    """The labels frame and its id column; header-less files (CGCNN ``id_prop.csv``) are detected."""
    first = pd.read_csv(file, header=None, nrows=1)
    if str(first.iloc[0, 0]) in stems:
        frame = pd.read_csv(file, header=None, dtype={0: str})
        names = ["id"] + (
            ["target"] if frame.shape[1] == 2 else [f"target_{k}" for k in range(1, frame.shape[1])]
        )
        frame.columns = names
        return frame, "id"
    frame = pd.read_csv(file)
    column = _find_column(frame.columns, ID_COLUMNS) or str(frame.columns[0])
    frame[column] = frame[column].astype(str).str.removesuffix(".cif")
    return frame, column


def read_cif_folder(path: Path, max_rows: int | None = None) -> SourceTable:
    """A folder of ``*.cif`` files plus a labels CSV (``labels.csv``, ``id_prop.csv`` or the only CSV).

    Ids are the CIF file names without ``.cif``; structures without a label get NaN properties.
    """
    if not path.is_dir():
        raise ToolInputError(f"expected a folder of CIF files, got {str(path)!r}")
    cifs = sorted(path.glob("*.cif"))[:max_rows]
    if not cifs:
        raise ToolInputError(f"expected *.cif files in {path}, got none")
    stems = [c.stem for c in cifs]
    labels_file = _labels_file(path)
    meta: dict[str, Any] = {"labels_file": labels_file.name if labels_file else None}
    units: dict[str, str] = {}
    if labels_file is None:
        properties = pd.DataFrame(index=range(len(cifs)))
    else:
        labels, id_column = _read_labels(labels_file, set(stems))
        if not labels[id_column].is_unique:
            raise ToolInputError(f"expected unique ids in {labels_file.name}, got duplicates")
        missing = sorted(set(labels[id_column]) - set(stems))
        if missing:
            meta["labels_without_cif"] = len(missing)
        table, units, ignored = _numeric_properties(labels.drop(columns=[id_column]))
        table.index = labels[id_column].to_numpy()
        properties = table.reindex(stems).reset_index(drop=True)
        if ignored:
            meta["ignored_columns"] = ignored
    rows = [(c.stem, partial(_read_cif, c)) for c in cifs]
    return _build_table(rows, properties, units, path=path, source="cif_folder", meta=meta)


def _read_cif(path: Path) -> Structure | Molecule:
    return parse_structure(path.read_text())


def _from_ase_row(row: Any) -> Structure | Molecule:
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = row.toatoms()
    if atoms.pbc.any():
        return AseAtomsAdaptor.get_structure(atoms)
    return AseAtomsAdaptor.get_molecule(atoms)


def read_ase_db(path: Path, max_rows: int | None = None) -> SourceTable:
    """An ASE database (``.db`` or ``.json``): periodic rows become crystals, others molecules.

    Properties are the numeric key-value pairs plus ``energy`` (eV) when stored.
    """
    from ase.db import connect

    if not path.is_file():
        raise ToolInputError(f"expected an ASE database file, got {str(path)!r}")
    try:
        records = list(connect(str(path)).select(limit=max_rows))
    except Exception as exc:
        raise ToolInputError(
            f"expected an ASE database, got {path.name} that cannot be read ({exc})"
        ) from exc
    values: list[dict[str, Any]] = []
    for row in records:
        pairs = {k: v for k, v in row.key_value_pairs.items() if isinstance(v, int | float | bool | str)}
        if row.get("energy") is not None:
            pairs["energy [eV]"] = row.energy
        values.append(pairs)
    frame = pd.DataFrame(values, index=range(len(records)))
    ids, id_column = _ids(frame, _stem(path), [f"{_stem(path)}-{row.id}" for row in records])
    properties, units, ignored = _numeric_properties(frame.drop(columns=[id_column] if id_column else []))

    rows = [(i, partial(_from_ase_row, row)) for i, row in zip(ids, records, strict=True)]
    meta = {"ignored_columns": ignored} if ignored else {}
    return _build_table(rows, properties, units, path=path, source="ase_db", meta=meta)
