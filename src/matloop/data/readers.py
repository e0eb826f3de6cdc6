"""Readers for users' own datasets: matbench JSON, CSV/JSON tables, CIF folders, ASE databases.

Each reader returns a :class:`~matloop.data.table.SourceTable` whose ``meta["accounting"]``
(an :class:`~matloop.data.accounting.Accounting`) says how many rows were read and why each
left-out row or missing value is so: a row whose structure cannot be used (parse error, no
atoms, unknown element, partial occupancies) or whose id repeats an earlier one is rejected;
a bad cell only makes that value missing (see :mod:`matloop.data.cells` for numbers and units).
A file that cannot be used at all raises :class:`~matloop.errors.ToolInputError`.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pymatgen.core import DummySpecies, Molecule, Structure

from matloop.data.accounting import Accounting
from matloop.data.cells import numeric_properties
from matloop.data.compact import structure_row
from matloop.data.slices import Kind
from matloop.data.table import RESERVED_COLUMNS, SourceTable
from matloop.errors import ToolInputError

STRUCTURE_COLUMNS = ("structure", "structures", "cif", "poscar")
ID_COLUMNS = ("id", "material_id", "mpid", "name", "filename")
_REASON_CHARS = 200

#: One row to read: (order, item id, where the user finds it, how to build its structure).
Row = tuple[int, str, str, Callable[[], Structure | Molecule]]


def _parse_cif(text: str) -> Structure:
    """The first structure of a CIF; one whose atoms disagree with its formula (cut short) fails."""
    from pymatgen.io.cif import CifParser  # slow import (spglib, symmetry): only for CIF input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser.from_str(text, check_cif=False)
        structure = parser.parse_structures(primitive=False)[0]
        problem = parser.check(structure)
    if problem and not any(isinstance(sp, DummySpecies) for sp in structure.species):  # reported later
        kind = problem.splitlines()[0].rstrip(":")
        raise ValueError(
            f"its atoms ({structure.composition.formula}) do not match its formula ({kind}); is it cut short?"
        )
    return structure


def parse_structure(value: Any) -> Structure | Molecule:
    """A structure or molecule from a pymatgen dict (or its JSON/Python-literal text), CIF or POSCAR."""
    if isinstance(value, Structure | Molecule):
        return value
    if value is None or (isinstance(value, float) and value != value) or value == "":
        raise ValueError("empty structure cell")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError) as exc:
                    raise ValueError(f"structure dict parse error: {_reason(exc)}") from exc
        else:
            cif = "_cell_length_a" in text or text.startswith("data_")
            fmt: Literal["CIF", "POSCAR"] = "CIF" if cif else "POSCAR"
            try:
                if cif:
                    return _parse_cif(text)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return Structure.from_str(text, fmt="poscar")
            except Exception as exc:
                raise ValueError(f"{fmt} parse error: {_reason(exc)}") from exc
    if isinstance(value, dict):
        is_molecule = value.get("@class") == "Molecule" or "lattice" not in value
        try:
            return Molecule.from_dict(value) if is_molecule else Structure.from_dict(value)
        except Exception as exc:
            raise ValueError(f"structure dict error: {_reason(exc)}") from exc
    raise ValueError(f"cannot read a structure from a {type(value).__name__}")


def _reason(exc: BaseException) -> str:
    """An exception as one short line (the type is named unless it is a plain ValueError)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc) is not ValueError and not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    return text[:_REASON_CHARS]


def _kind_of(items: Iterable[Structure | Molecule], name: str) -> Kind:
    kinds = {"crystal" if isinstance(s, Structure) else "molecule" for s in items}
    if len(kinds) > 1:
        raise ToolInputError(f"expected only crystals or only molecules in {name}, got both")
    return "molecule" if kinds == {"molecule"} else "crystal"


def _find_column(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    lower = {str(c).lower(): str(c) for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def build_table(
    rows: Sequence[Row],
    properties: pd.DataFrame,
    units: dict[str, str],
    *,
    name: str,
    source: str,
    account: Accounting,
    meta: dict[str, Any],
) -> SourceTable:
    """Parse each row's structure into a table; rejected rows go to ``account`` with their reason.

    ``properties`` is aligned with ``rows``. A row is rejected when its id repeats an earlier
    row's or its structure cannot be read or stored (no atoms, unknown element, disorder).
    """
    first_seen: dict[str, str] = {}
    kept, items = [], []
    for k, (order, item_id, where, parse) in enumerate(rows):
        if item_id in first_seen:
            account.reject(order, item_id, where, f"duplicate id, first seen in {first_seen[item_id]}")
            continue
        first_seen[item_id] = where
        try:
            item = parse()
            structure_row(item)
        except Exception as exc:
            account.reject(order, item_id, where, _reason(exc))
            continue
        kept.append(k)
        items.append(item)
    account.read += len(rows)
    account.finish()
    if not items:
        problems = "; ".join(account.summary(3)) or "no rows"
        raise ToolInputError(f"expected readable structures in {name}, got none ({problems})")
    return SourceTable.from_items(
        [rows[k][1] for k in kept],
        items,
        properties.iloc[kept],
        units=units,
        kind=_kind_of(items, name),
        source=source,
        meta={**meta, "accounting": account.model_dump()},
    )


def _ids(frame: pd.DataFrame, fallback: list[str], account: Accounting) -> tuple[list[str], str | None]:
    """Each row's id from the id column (a blank cell takes the fallback id), or the fallback ids."""
    column = _find_column(frame.columns, ID_COLUMNS)
    if column is None:
        return fallback, None
    blank = [pd.isna(v) or str(v).strip() == "" for v in frame[column]]
    ids = [fb if b else str(v) for v, fb, b in zip(frame[column], fallback, blank, strict=True)]
    if any(blank):
        rows = "1 row has" if sum(blank) == 1 else f"{sum(blank)} rows have"
        account.notes.append(f"{rows} no value in id column {column!r}; named by position")
    return ids, column


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def _decode(data: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-8 (BOM or not), UTF-16 with a BOM, else Latin-1; binary data fail."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "UTF-16"
    binary = sum(b < 32 and b not in b"\t\n\r\f" for b in data[:4096])
    if b"\x00" in data or binary > len(data[:4096]) // 20:
        raise ValueError("not a text file (binary content)")
    try:
        return data.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "Latin-1"


def _file_text(path: Path, account: Accounting) -> str:
    """A (gzipped) text file's content; ValueError when it is empty or not text."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"not a gzip file ({exc})") from exc
    if not data.strip():
        raise ValueError(f"empty file ({len(data)} bytes)")
    text, encoding = _decode(data)
    if encoding != "UTF-8":
        account.notes.append(f"{path.name} is not UTF-8; read as {encoding}")
    return text


def _whole_file_text(path: Path, what: str, account: Accounting) -> str:
    try:
        return _file_text(path, account)
    except ValueError as exc:
        raise ToolInputError(f"expected {what}, got {path.name}: {exc}") from exc


def _load_json(path: Path, account: Accounting) -> Any:
    text = _whole_file_text(path, "a JSON file", account)
    try:
        return json.loads(text)
    except ValueError as exc:
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


def _csv_frame(text: str, **kwargs: Any) -> pd.DataFrame:
    """A CSV table whose id column keeps its cells exactly as written ('007', '1e3' and 'NA' stay
    text; a blank cell is an empty string)."""
    frame = pd.read_csv(io.StringIO(text), **kwargs)
    column = _find_column(frame.columns, ID_COLUMNS)
    if column is not None:
        raw = pd.read_csv(io.StringIO(text), usecols=[column], dtype=str, keep_default_na=False, **kwargs)
        frame[column] = raw[column]
    return frame


def _read_csv(path: Path, account: Accounting) -> pd.DataFrame:
    text = _whole_file_text(path, "a CSV table", account)
    lines = text.splitlines()
    comments = next((k for k, line in enumerate(lines) if not line.startswith("#")), len(lines))
    try:
        return _csv_frame(text, skiprows=comments)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ToolInputError(f"expected a CSV table, got {path.name} that cannot be parsed ({exc})") from exc


def _table_from_frame(
    frame: pd.DataFrame,
    index: list[Any] | None,
    path: Path,
    source: str,
    max_rows: int | None,
    account: Accounting,
) -> SourceTable:
    frame = frame.iloc[:max_rows] if max_rows is not None else frame
    column = _find_column(frame.columns, STRUCTURE_COLUMNS)
    if column is None:
        raise ToolInputError(
            f"expected a structure column named one of {list(STRUCTURE_COLUMNS)} in {path.name}, "
            f"got columns {[str(c) for c in frame.columns]}"
        )
    fallback = [str(v) for v in index[: len(frame)]] if index is not None else None
    ids, id_column = _ids(frame, fallback or [f"{_stem(path)}-{k}" for k in range(len(frame))], account)
    places = [(k, i, f"row {k + 1} (id {i!r})") for k, i in enumerate(ids)]
    rest = frame.drop(columns=[c for c in (column, id_column) if c is not None])
    properties, units = numeric_properties(rest, places, account, reserved=RESERVED_COLUMNS)
    rows = [(*place, partial(parse_structure, v)) for place, v in zip(places, frame[column], strict=True)]
    return build_table(
        rows, properties, units, name=path.name, source=source, account=account, meta={"path": str(path)}
    )


def read_matbench(path: Path, max_rows: int | None = None) -> SourceTable:
    """A matbench/matminer JSON(.gz) file: ``{"index", "columns", "data"}`` with structure dicts."""
    account = Accounting()
    data = _load_json(path, account)
    if not (isinstance(data, dict) and {"columns", "data"} <= set(data)):
        raise ToolInputError(
            f"expected a matbench JSON object with keys index, columns, data in {path.name}, "
            f"got {sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    frame, index = _frame_from_json(data, path)
    return _table_from_frame(frame, index, path, "matbench", max_rows, account)


def read_table_file(path: Path, max_rows: int | None = None) -> SourceTable:
    """A CSV or JSON table with a structure column (CIF text, POSCAR text or pymatgen dict)."""
    account = Accounting()
    if path.name.endswith((".json", ".json.gz")):
        frame, index = _frame_from_json(_load_json(path, account), path)
    elif path.name.endswith((".csv", ".csv.gz")):
        frame, index = _read_csv(path, account), None
    else:
        raise ToolInputError(f"expected a .csv or .json(.gz) file, got {path.name!r}")
    return _table_from_frame(frame, index, path, "table", max_rows, account)


def _labels_file(folder: Path) -> Path | None:
    for name in ("labels.csv", "id_prop.csv"):
        if (folder / name).is_file():
            return folder / name
    csvs = sorted(folder.glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def _read_labels(file: Path, stems: set[str], account: Accounting) -> tuple[pd.DataFrame, str]:
    """The labels frame and its id column; header-less files (CGCNN ``id_prop.csv``) are detected."""
    text = _whole_file_text(file, "a labels CSV", account)
    first = text.split("\n", 1)[0].split(",", 1)[0].strip()
    try:
        if first.removesuffix(".cif") in stems:
            frame = pd.read_csv(io.StringIO(text), header=None, dtype={0: str}, keep_default_na=False)
            frame.columns = ["id"] + (
                ["target"] if frame.shape[1] == 2 else [f"target_{k}" for k in range(1, frame.shape[1])]
            )
            column = "id"
        else:
            frame = _csv_frame(text)
            column = _find_column(frame.columns, ID_COLUMNS) or str(frame.columns[0])
    except (ValueError, pd.errors.ParserError) as exc:
        raise ToolInputError(f"expected a labels CSV, got {file.name} that cannot be parsed ({exc})") from exc
    frame[column] = frame[column].astype(str).str.strip().str.removesuffix(".cif")
    return frame, column


def _read_cif(path: Path, account: Accounting) -> Structure | Molecule:
    return parse_structure(_file_text(path, account))


def read_cif_folder(path: Path, max_rows: int | None = None) -> SourceTable:
    """A folder of ``*.cif`` files plus a labels CSV (``labels.csv``, ``id_prop.csv`` or the only CSV).

    Ids are the CIF file names without ``.cif``. A CIF without a label is kept without values
    (and reported); a label without a CIF file, or repeating an earlier label's id, is rejected.
    """
    if not path.is_dir():
        raise ToolInputError(f"expected a folder of CIF files, got {str(path)!r}")
    every_cif = sorted(path.glob("*.cif"))
    if not every_cif:
        raise ToolInputError(f"expected *.cif files in {path}, got none")
    cifs = every_cif[:max_rows]
    order = {c.stem: k for k, c in enumerate(cifs)}
    account = Accounting()
    labels_file = _labels_file(path)
    properties, units = pd.DataFrame(index=range(len(cifs))), dict[str, str]()
    if labels_file is None:
        account.notes.append("no labels file (labels.csv, id_prop.csv); structures have no properties")
    else:
        labels, id_column = _read_labels(labels_file, {c.stem for c in every_cif}, account)
        first_seen: dict[str, int] = {}
        matched: list[int] = []
        for r, item_id in enumerate(labels[id_column]):
            where = f"{labels_file.name} row {r + 1} (id {item_id!r})"
            if item_id in first_seen:
                reason = f"duplicate id, first seen in row {first_seen[item_id] + 1}"
            elif (path / f"{item_id}.cif").is_file():
                first_seen[item_id] = r
                if item_id in order:  # CIFs beyond max_rows are not read, nor their labels
                    matched.append(r)
                continue
            else:
                first_seen[item_id] = r
                reason = f"no CIF file {item_id}.cif"
            account.read += 1
            account.reject(len(cifs) + r, item_id, where, reason)
        rows = labels.iloc[matched]
        places = [
            (order[i], i, f"{labels_file.name} row {r + 1} (id {i!r})")
            for r, i in zip(matched, rows[id_column], strict=True)
        ]
        table, units = numeric_properties(
            rows.drop(columns=[id_column]).reset_index(drop=True), places, account, reserved=RESERVED_COLUMNS
        )
        table.index = rows[id_column].to_numpy()
        properties = table.reindex([c.stem for c in cifs]).reset_index(drop=True)
        for cif in cifs:
            if cif.stem not in table.index:
                account.bad_cell(
                    order[cif.stem], cif.stem, cif.name, f"no row in {labels_file.name}; kept without values"
                )
    rows_to_read = [(k, c.stem, c.name, partial(_read_cif, c, account)) for k, c in enumerate(cifs)]
    meta = {"path": str(path), "labels_file": labels_file.name if labels_file else None}
    return build_table(
        rows_to_read, properties, units, name=path.name, source="cif_folder", account=account, meta=meta
    )


def _from_ase_row(row: Any) -> Structure | Molecule:
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = row.toatoms()
    if atoms.pbc.any():
        return AseAtomsAdaptor.get_structure(atoms)
    return AseAtomsAdaptor.get_molecule(atoms)


def read_ase_db(path: Path, max_rows: int | None = None) -> SourceTable:
    """An ASE database (``.db`` or ``.json``): periodic rows become crystals, others molecules.

    Properties are the key-value pairs that hold numbers plus ``energy`` (eV) when stored.
    """
    from ase.db import connect

    if not path.is_file():
        raise ToolInputError(f"expected an ASE database file, got {str(path)!r}")
    if path.stat().st_size == 0:
        raise ToolInputError(f"expected an ASE database, got an empty file {path.name} (0 bytes)")
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
    account = Accounting()
    frame = pd.DataFrame(values, index=range(len(records)))
    ids, id_column = _ids(frame, [f"{_stem(path)}-{row.id}" for row in records], account)
    places = [(k, i, f"row {row.id} (id {i!r})") for k, (i, row) in enumerate(zip(ids, records, strict=True))]
    rest = frame.drop(columns=[id_column] if id_column else [])
    properties, units = numeric_properties(rest, places, account, reserved=RESERVED_COLUMNS)
    rows = [(*place, partial(_from_ase_row, row)) for place, row in zip(places, records, strict=True)]
    return build_table(
        rows, properties, units, name=path.name, source="ase_db", account=account, meta={"path": str(path)}
    )
