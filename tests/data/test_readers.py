"""Users' own datasets: matbench JSON, CSV/JSON tables, CIF folders, ASE databases."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from pymatgen.core import Lattice, Molecule, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from matloop.data.accounting import Accounting
from matloop.data.readers import parse_structure
from matloop.data.sources import load_source, load_table
from matloop.errors import ToolInputError


def _crystals() -> dict[str, Structure]:
    return {
        "nacl": Structure.from_spacegroup(
            "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "si": Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]]),
        "mgo": Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    }


def test_parse_structure_formats():
    s = _crystals()["mgo"]
    for value in (
        s.as_dict(),
        json.dumps(s.as_dict()),
        str(s.as_dict()),
        str(CifWriter(s)),
        Poscar(s).get_str(),
    ):
        parsed = parse_structure(value)
        assert isinstance(parsed, Structure)
        assert parsed.composition.reduced_formula == "MgO"
        assert parsed.lattice.a == pytest.approx(4.21, abs=1e-4)
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert isinstance(parse_structure(water.as_dict()), Molecule)
    with pytest.raises(ValueError, match="cannot read a structure"):
        parse_structure(3.0)


def test_matbench_json_gz(tmp_path, settings):
    crystals = _crystals()
    path = tmp_path / "matbench_test.json.gz"
    data = {
        "index": [f"mb-{k}" for k in range(3)],
        "columns": ["structure", "e_form"],
        "data": [[s.as_dict(), -float(k)] for k, s in enumerate(crystals.values())],
    }
    with gzip.open(path, "wt") as handle:
        json.dump(data, handle)
    table = load_table("matbench", path, settings=settings)
    assert table.ids == ["mb-0", "mb-1", "mb-2"] and table.kind == "crystal"
    assert table.properties == ["e_form"] and table.units["e_form"] == "unknown"
    data_slice = table.to_slice()
    assert data_slice.structures[2].composition.reduced_formula == "MgO"
    np.testing.assert_allclose(data_slice.target("e_form"), [0, -1, -2])
    np.testing.assert_allclose(data_slice.structures[0].lattice.matrix, crystals["nacl"].lattice.matrix)

    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"structure": s.as_dict()} for s in crystals.values()]))
    with pytest.raises(ToolInputError, match="matbench JSON"):
        load_table("matbench", records, settings=settings)


def test_csv_with_cif_poscar_and_units(tmp_path, settings):
    crystals = list(_crystals().values())
    frame = pd.DataFrame(
        {
            "material_id": ["a", "b", "c", "bad"],
            "cif": [
                str(CifWriter(crystals[0])),
                Poscar(crystals[1]).get_str(),
                str(CifWriter(crystals[2])),
                "junk",
            ],
            "band_gap [eV]": [5.0, 1.1, 7.8, 0.0],
            "note": ["x", "y", "z", "w"],
            "log10(K_VRH)": [1.5, 2.0, 2.2, 0.0],
        }
    )
    path = tmp_path / "mine.csv"
    path.write_text("# my crystals\n" + frame.to_csv(index=False))
    table = load_table("table", path, settings=settings)
    assert table.ids == ["a", "b", "c"]
    account = Accounting.of(table.meta)
    assert (account.read, account.kept) == (4, 3)
    assert [i.message.split(":")[0] for i in account.issues] == ["row 4 (id 'bad')"]
    assert account.issues[0].reason.startswith("POSCAR parse error")
    assert account.unused_columns == {"note": "mostly not numbers (4 of 4 cells)"}
    assert table.units == {"band_gap": "eV", "log10(K_VRH)": "unknown"}
    assert table.frame["band_gap"].tolist() == [5.0, 1.1, 7.8]


def test_json_records_of_molecules(tmp_path, settings):
    water = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    methane = Molecule.from_dict(json.loads(json.dumps(water.as_dict())))
    path = tmp_path / "mols.json"
    path.write_text(
        json.dumps(
            [
                {"id": "w", "structure": water.as_dict(), "e (eV)": -1.0},
                {"id": "m", "structure": methane.as_dict(), "e (eV)": math.nan},
            ]
        )
    )
    data = load_source("table", path, settings=settings)
    assert data.kind == "molecule" and data.units == {"e": "eV"}
    assert isinstance(data.structures[0], Molecule)
    assert np.isnan(data.target("e")[1])  # NaN labels are kept as NaN, never invented


def test_table_errors(tmp_path, settings):
    s = _crystals()["si"]
    mol = Molecule(["H", "H"], [[0, 0, 0], [0.74, 0, 0]])
    no_structure = tmp_path / "nostruct.csv"
    no_structure.write_text("id,y\na,1\n")
    with pytest.raises(ToolInputError, match="structure column"):
        load_table("table", no_structure, settings=settings)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([{"structure": s.as_dict()}, {"structure": mol.as_dict()}]))
    with pytest.raises(ToolInputError, match="only crystals or only molecules"):
        load_table("table", mixed, settings=settings)
    unreadable = tmp_path / "all_bad.csv"
    unreadable.write_text("structure,y\nnonsense,1\n")
    with pytest.raises(ToolInputError, match=r"structures in all_bad.csv, got none \(row 1 .*POSCAR"):
        load_table("table", unreadable, settings=settings)
    wrong = tmp_path / "data.txt"
    wrong.write_text("x")
    with pytest.raises(ToolInputError, match=r"\.csv or \.json"):
        load_table("table", wrong, settings=settings)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ToolInputError, match="JSON"):
        load_table("table", broken, settings=settings)


def test_disordered_structure_is_skipped(tmp_path, settings):
    ordered = _crystals()["mgo"]
    disordered = Structure(Lattice.cubic(4.2), [{"Mg": 0.5, "Ca": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    path = tmp_path / "dis.json"
    path.write_text(json.dumps([{"structure": ordered.as_dict()}, {"structure": disordered.as_dict()}]))
    table = load_table("table", path, settings=settings)
    assert table.ids == ["dis-0"]
    assert [i.message for i in Accounting.of(table.meta).issues] == [
        "row 2 (id 'dis-1'): disordered sites (partial occupancies) are not supported"
    ]


def test_cif_folder_with_labels_csv(tmp_path, settings):
    for name, s in _crystals().items():
        CifWriter(s).write_file(tmp_path / f"{name}.cif")
    (tmp_path / "labels.csv").write_text(
        "id,gap (eV),formation_energy\nnacl,5.0,-2.1\nsi.cif,1.1,0.0\nghost,3,3\n"
    )
    table = load_table("cif_folder", tmp_path, settings=settings)
    frame = table.frame.set_index("id")
    assert sorted(table.ids) == ["mgo", "nacl", "si"]
    assert frame.loc["nacl", "gap"] == 5.0 and frame.loc["si", "formation_energy"] == 0.0
    assert np.isnan(frame.loc["mgo", "gap"])  # a CIF without a label is kept unlabelled
    assert table.units["gap"] == "eV"
    assert [i.message for i in Accounting.of(table.meta).issues] == [
        "mgo.cif: no row in labels.csv; kept without values",
        "labels.csv row 3 (id 'ghost'): no CIF file ghost.cif",
    ]


def test_cif_folder_with_cgcnn_id_prop(tmp_path, settings):
    for name, s in _crystals().items():
        CifWriter(s).write_file(tmp_path / f"{name}.cif")
    (tmp_path / "id_prop.csv").write_text("nacl,0.5\nsi,0.7\nmgo,0.9\n")
    data = load_source("cif_folder", tmp_path, settings=settings)
    assert dict(zip(data.ids, data.target("target"), strict=True)) == {"mgo": 0.9, "nacl": 0.5, "si": 0.7}
    with pytest.raises(ToolInputError, match="folder of CIF files"):
        load_source("cif_folder", tmp_path / "id_prop.csv", settings=settings)


def test_ase_db_crystals_and_molecules(tmp_path, settings):
    path = tmp_path / "mine.db"
    with connect(str(path)) as db:
        cu = bulk("Cu", "fcc", a=3.6)
        cu.calc = SinglePointCalculator(cu, energy=-3.7)
        db.write(cu, band_gap=0.0, tag="metal")
        db.write(bulk("Si", "diamond", a=5.43), band_gap=1.1)
    table = load_table("ase_db", path, settings=settings)
    assert table.kind == "crystal" and table.ids == ["mine-1", "mine-2"]
    assert table.units["energy"] == "eV" and table.frame["energy"].iloc[0] == -3.7
    assert np.isnan(table.frame["energy"].iloc[1])
    si = table.to_slice().structures[1]
    assert isinstance(si, Structure) and si.composition.reduced_formula == "Si"
    assert si.volume == pytest.approx(5.43**3 / 4, rel=1e-6)

    mols = tmp_path / "mols.db"
    with connect(str(mols)) as db:
        db.write(molecule("H2O"), name="water", mu=1.85)
        db.write(Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), name="hydrogen", mu=0.0)
    data = load_source("ase_db", mols, settings=settings)
    assert data.kind == "molecule" and data.ids == ["water", "hydrogen"]
    assert isinstance(data.structures[0], Molecule) and data.units["mu"] == "unknown"
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    with pytest.raises(ToolInputError, match="ASE database"):
        load_table("ase_db", bad, settings=settings)


def test_ids_stay_as_written(tmp_path, settings):
    s = _crystals()["nacl"]
    poscar = Poscar(s).get_str()
    ids = ["007", "7", "1e3", "1000", "NA"]
    frame = pd.DataFrame({"id": ids, "structure": [poscar] * 5, "band_gap [eV]": [1.0, 2, 3, 4, 5]})
    path = tmp_path / "ids.csv"
    frame.to_csv(path, index=False)
    data = load_source("table", path, settings=settings)
    assert data.ids == ids  # no float conversion, 'NA' is an id, no duplicates invented

    labels = pd.DataFrame({"id": ["007", "7"], "band_gap": [1.0, 2.0]})
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name in ("007", "7"):
        CifWriter(s).write_file(folder / f"{name}.cif")
    labels.to_csv(folder / "labels.csv", index=False)
    assert sorted(load_source("cif_folder", folder, settings=settings).ids) == ["007", "7"]
