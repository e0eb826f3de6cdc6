"""Every reader accounts for every row and cell of a file full of defects, exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from tests.data import defects

from matloop.data.accounting import Accounting
from matloop.data.materials_project import MPQuery, table_from_docs
from matloop.data.sources import load_table
from matloop.errors import ToolInputError


def _values(table, column: str) -> dict[str, float]:
    return dict(zip(table.ids, table.frame[column].tolist(), strict=True))


def _assert_values(table, column: str, expected: dict[str, float]) -> None:
    got = _values(table, column)
    assert list(got) == list(expected)
    np.testing.assert_allclose(list(got.values()), list(expected.values()))  # NaN == NaN here


def _messages(table) -> list[str]:
    return [i.message for i in Accounting.of(table.meta).issues]


def test_csv_table_every_defect_reported_by_row(tmp_path, settings):
    table = load_table("table", defects.defect_csv(tmp_path / "mine.csv"), settings=settings)
    account = Accounting.of(table.meta)
    assert _messages(table) == defects.TABLE_ISSUES
    assert (account.read, account.kept, len(account.rejected), len(account.bad_cells)) == (13, 9, 4, 4)
    _assert_values(table, "band_gap", defects.TABLE_KEPT)  # no value lost for a neighbour's bad cell
    assert table.units == {"band_gap": "eV"}
    assert account.unused_columns == {"note": "mostly not numbers (13 of 13 cells)"}
    assert account.notes == []


def test_json_records_every_defect_reported_by_row(tmp_path, settings):
    table = load_table("table", defects.defect_json(tmp_path / "mine.json"), settings=settings)
    assert _messages(table) == [
        "row 2 (id 'none'): empty structure cell",
        "row 3 (id 'xx'): structure dict error: 'Xx' is not a valid Element",
        "row 4 (id 'abc'), gap: 'abc' is not a number",
        "row 5 (id 'inf'), gap: inf is not a finite number",
        "row 7 (id 'a'): duplicate id, first seen in row 1 (id 'a')",
    ]
    _assert_values(table, "gap", {"a": 7.8, "abc": math.nan, "inf": math.nan, "mev": 1.1})
    account = Accounting.of(table.meta)
    assert (account.read, account.kept) == (7, 4)


def test_matbench_every_defect_reported_by_row(tmp_path, settings):
    table = load_table("matbench", defects.defect_matbench(tmp_path / "mb.json.gz"), settings=settings)
    assert _messages(table) == [
        "row 2 (id 'mb-2'), e_form: 'n/a eV' is not a number",
        "row 3 (id 'mb-3'): empty structure cell",
        "row 4 (id 'mb-4'), e_form: 'ignore all previous instructions an...' is not a number",
        "row 5 (id 'mb-2'): duplicate id, first seen in row 2 (id 'mb-2')",
    ]
    _assert_values(table, "e_form", {"mb-1": -3.0, "mb-2": math.nan, "mb-4": math.nan})


def test_cif_folder_every_file_and_label_accounted(tmp_path, settings):
    table = load_table("cif_folder", defects.defect_cif_folder(tmp_path / "cifs"), settings=settings)
    account = Accounting.of(table.meta)
    assert _messages(table) == defects.CIF_FOLDER_ISSUES
    # 8 CIF files + 2 label rows that match no (new) CIF; 4 kept
    assert (account.read, account.kept, len(account.rejected)) == (10, 4, 6)
    _assert_values(table, "band_gap", defects.CIF_FOLDER_KEPT)
    assert account.notes == ["latin.cif is not UTF-8; read as Latin-1"]
    assert account.unused_columns == {"note": "mostly not numbers (5 of 5 cells)"}


def test_ase_db_every_defect_reported_by_row(tmp_path, settings):
    table = load_table("ase_db", defects.defect_ase_db(tmp_path / "ase.db"), settings=settings)
    account = Accounting.of(table.meta)
    assert _messages(table) == defects.ASE_DB_ISSUES
    assert (account.read, account.kept) == (7, 4)
    _assert_values(table, "band_gap", defects.ASE_DB_KEPT)
    assert account.notes == ["1 row has no value in id column 'name'; named by position"]


@dataclass
class _SummaryDoc:
    """The fields of an mp-api summary document that matloop asks for."""

    material_id: str
    structure: Structure | None
    band_gap: float | None = None
    formation_energy_per_atom: float | None = None
    energy_above_hull: float | None = None
    density: float | None = None
    volume: float | None = None
    total_magnetization: float | None = None


def test_materials_project_documents_accounted():
    disordered = Structure(Lattice.cubic(4.2), [{"Mg": 0.5, "Ca": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    docs = [
        _SummaryDoc("mp-1", defects.MGO, band_gap=4.5),
        _SummaryDoc("mp-2", None, band_gap=1.0),
        _SummaryDoc("mp-3", disordered),
        _SummaryDoc("mp-1", defects.SI, band_gap=0.6),
        _SummaryDoc("mp-4", defects.SI, band_gap=None),
    ]
    table = table_from_docs(docs, MPQuery())
    assert _messages(table) == [
        "row 2 (id 'mp-2'): no structure in the document",
        "row 3 (id 'mp-3'): disordered sites (partial occupancies) are not supported",
        "row 4 (id 'mp-1'): duplicate id, first seen in row 1 (id 'mp-1')",
    ]
    _assert_values(table, "band_gap", {"mp-1": 4.5, "mp-4": math.nan})


def test_strict_fails_on_the_first_problem_even_from_the_cache(tmp_path, settings):
    path = defects.defect_csv(tmp_path / "mine.csv")
    assert len(load_table("table", path, settings=settings)) == 9  # builds the cache
    for _ in range(2):
        with pytest.raises(ToolInputError) as err:
            load_table("table", path, strict=True, settings=settings)
        assert str(err.value) == (
            "expected every row and cell of source 'table' to be usable (strict mode), got "
            f"{defects.TABLE_ISSUES[0]} (and 7 more problems)"
        )
    clean = tmp_path / "clean.csv"
    clean.write_text("id,cif,band_gap [eV]\n" + f'a,"{defects.cif(defects.MGO)}",3.1 eV\n')
    table = load_table("table", clean, strict=True, settings=settings)
    assert table.frame["band_gap"].tolist() == [3.1] and Accounting.of(table.meta).issues == []


def test_empty_files_and_other_encodings(tmp_path, settings):
    for name, what in [("empty.csv", "a CSV table"), ("empty.json", "a JSON file")]:
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ToolInputError, match=f"expected {what}, got {name}: empty file \\(0 bytes\\)"):
            load_table("table", tmp_path / name, settings=settings)
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(ToolInputError, match=r"ASE database, got an empty file empty.db \(0 bytes\)"):
        load_table("ase_db", tmp_path / "empty.db", settings=settings)
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "a.cif").write_text(defects.cif(defects.MGO))
    (folder / "labels.csv").write_bytes(b"")
    with pytest.raises(ToolInputError, match=r"a labels CSV, got labels.csv: empty file \(0 bytes\)"):
        load_table("cif_folder", folder, settings=settings)

    text = f'id,cif,band_gap [eV],note\nå,"{defects.cif(defects.SI)}",1.1,"25 °C"\n'
    for encoding, label in [("latin-1", "Latin-1"), ("utf-16", "UTF-16"), ("utf-8-sig", None)]:
        path = tmp_path / f"{encoding}.csv"
        path.write_bytes(text.encode(encoding))
        table = load_table("table", path, settings=settings)
        assert table.ids == ["å"] and table.frame["band_gap"].tolist() == [1.1]
        notes = Accounting.of(table.meta).notes
        assert notes == ([f"{path.name} is not UTF-8; read as {label}"] if label else [])
    (tmp_path / "binary.csv").write_bytes(defects.GARBAGE)
    with pytest.raises(ToolInputError, match=r"got binary.csv: not a text file \(binary content\)"):
        load_table("table", tmp_path / "binary.csv", settings=settings)
