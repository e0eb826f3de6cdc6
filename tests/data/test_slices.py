"""Slices round-trip through the workspace in both structure formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Molecule, Structure

from matloop.data.bundled import load_bundled
from matloop.data.compact import LazyStructures
from matloop.data.qm9 import read_qm9
from matloop.data.slices import DatasetSlice, load_slice, save_slice


@pytest.mark.parametrize(
    "source",
    [
        "crystal",
        "molecule",
    ],
)
def test_source_slices_are_stored_as_arrays(workspace, source):
    table = load_bundled("mp_elastic") if source == "crystal" else read_qm9(max_rows=30)
    data = table.to_slice(np.array([3, 1, 4, 1 + 5]))
    slice_id = save_slice(workspace, data)
    assert workspace.artifact(slice_id).meta["structure_format"] == "arrays"
    back = load_slice(workspace, slice_id)
    assert isinstance(back.structures, LazyStructures)
    assert back.ids == data.ids and back.kind == data.kind and back.units == data.units
    assert "structure_format" not in back.meta
    pd.testing.assert_frame_equal(back.properties, data.properties)
    for a, b in zip(data.structures, back.structures, strict=True):
        assert type(a) is type(b) and a.species == b.species
        np.testing.assert_allclose(a.cart_coords, b.cart_coords)
        if isinstance(a, Structure):
            np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix)
    sub = back.subset([back.ids[2], back.ids[0]])
    assert sub.structures[1] == back.structures[0]
    asked = load_slice(workspace, slice_id, [back.ids[2], "not-in-it", back.ids[0], back.ids[2]])
    assert asked.ids == sub.ids and list(asked.structures) == list(sub.structures)
    pd.testing.assert_frame_equal(asked.properties, sub.properties)
    assert load_slice(workspace, slice_id, []).ids == []
    assert isinstance(sub.structures, LazyStructures)  # a subset stays compact when saved again
    assert workspace.artifact(save_slice(workspace, sub)).meta["structure_format"] == "arrays"


def test_other_slices_keep_pymatgen_json(workspace):
    s = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.add_oxidation_state_by_element({"Mg": 2, "O": -2})
    m = Molecule(["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    data = DatasetSlice(["mgo"], [s], pd.DataFrame({"y": [1.0]}), {"y": "eV"}, "crystal", "test")
    slice_id = save_slice(workspace, data)
    assert workspace.artifact(slice_id).meta["structure_format"] == "pymatgen-json"
    back = load_slice(workspace, slice_id)
    assert back.structures[0] == s and str(back.structures[0][0].specie) == "Mg2+"
    assert load_slice(workspace, slice_id, ["mgo"]).structures == [s]
    mol_id = save_slice(workspace, DatasetSlice(["w"], [m], pd.DataFrame(index=[0]), {}, "molecule", "t"))
    assert load_slice(workspace, mol_id).structures[0] == m
