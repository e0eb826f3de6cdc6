"""QM9 from the installed qm9pack: unit conversion, molecules, cache, missing extra."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Molecule

from matloop.data import qm9
from matloop.data.qm9 import HARTREE_EV, qm9_data_dir, read_qm9
from matloop.data.sources import available_sources, load_source, load_table
from matloop.errors import MissingExtraError, ToolInputError


def test_ch4_gap_in_ev():
    table = read_qm9(max_rows=50)
    assert len(table) == 50 and table.kind == "molecule"
    row = table.frame.set_index("id").loc["qm9-000001"]
    assert row["gap"] == pytest.approx(0.5048 * HARTREE_EV, abs=1e-9)
    assert row["gap"] == pytest.approx(13.736, abs=1e-3)
    assert row["homo"] == pytest.approx(-0.3877 * HARTREE_EV)
    assert row["lumo"] == pytest.approx(0.1171 * HARTREE_EV)
    assert table.units["gap"] == table.units["homo"] == table.units["u0"] == "eV"
    mol = table.to_slice().structures[0]
    assert isinstance(mol, Molecule)
    assert mol.composition.as_dict() == {"C": 1.0, "H": 4.0}
    # C-H bond of methane ~1.09 Å
    assert mol.get_distance(0, 1) == pytest.approx(1.09, abs=0.01)


def test_gap_is_lumo_minus_homo():
    table = read_qm9(max_rows=500)
    frame = table.frame
    # the CSV rounds to 1e-4 Ha (2.7 meV), so the difference agrees to that
    np.testing.assert_allclose(frame["gap"], frame["lumo"] - frame["homo"], atol=2e-4 * HARTREE_EV)


def test_second_load_comes_from_cache(settings):
    first = load_table("qm9", max_rows=300, settings=settings)
    second = load_table("qm9", max_rows=300, settings=settings)
    assert not first.from_cache and second.from_cache
    assert second.ids == first.ids
    np.testing.assert_array_equal(second.frame["gap"], first.frame["gap"])
    a, b = first.to_slice().structures[7], second.to_slice().structures[7]
    np.testing.assert_allclose(a.cart_coords, b.cart_coords)
    assert list(settings.cache_dir.glob("datasets/qm9-*.parquet"))


def test_folder_with_part_files(tmp_path, settings):
    head = pd.read_csv(qm9_data_dir() / "qm9_part1.csv", nrows=20)
    head.to_csv(tmp_path / "qm9_part1.csv", index=False)
    data = load_source("qm9", path=tmp_path, settings=settings)
    assert len(data) == 20 and data.ids[0] == "qm9-000001"
    with pytest.raises(ToolInputError, match="existing file or folder"):
        load_source("qm9", path=tmp_path / "empty", settings=settings)


def test_missing_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(qm9, "QM9_PACKAGE", "qm9pack_not_installed")
    with pytest.raises(MissingExtraError, match=r"matloop\[qm9\]"):
        read_qm9()
    info = next(s for s in available_sources() if s.name == "qm9")
    assert "matloop[qm9]" in info.status


def test_inconsistent_rows_are_an_error(tmp_path):
    head = pd.read_csv(qm9_data_dir() / "qm9_part1.csv", nrows=3)
    head.loc[1, "N_atoms"] = 9
    head.to_csv(tmp_path / "qm9_part1.csv", index=False)
    with pytest.raises(ValueError, match="inconsistent"):
        read_qm9(tmp_path)
