from __future__ import annotations

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Molecule, Structure
from validation_helpers import perovskite, rocksalt

from matloop.data.compact import STRUCTURE_COLUMNS, LazyStructures, structure_row
from matloop.settings import ValidationSettings
from matloop.validation.sanity import (
    check_structure,
    check_structures,
    reduced_structure,
    same_structure,
    site_elements,
)


def test_physical_structure_passes():
    assert check_structure(perovskite("Sr", "Ti", 3.95), ValidationSettings()) is None


def test_close_atoms_rejected():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    assert "closer than 0.5" in check_structure(s, ValidationSettings())


def test_atom_close_to_its_own_periodic_image_rejected():
    thin = Structure(Lattice.orthorhombic(0.4, 4.0, 4.0), ["Na"], [[0, 0, 0]])  # 6.4 Å³ per atom
    assert "0.40 Å apart, closer than 0.5" in check_structure(thin, ValidationSettings())


def test_absurd_volume_rejected():
    assert "volume per atom" in check_structure(rocksalt("Mg", "O", 30.0), ValidationSettings())


def test_too_many_atoms_rejected():
    big = perovskite("Sr", "Ti", 3.95) * (2, 2, 2)
    assert "exceeds the limit of 10" in check_structure(big, ValidationSettings(max_sites=10))


def test_same_structure_matches_strained_copy_not_other_formula():
    assert same_structure(perovskite("Sr", "Ti", 3.95), perovskite("Sr", "Ti", 3.90))
    assert not same_structure(perovskite("Sr", "Ti", 3.95), perovskite("Ba", "Ti", 3.95))
    # a level that computes the structure as given (a single point) tells the two volumes apart
    assert not same_structure(perovskite("Sr", "Ti", 3.95), perovskite("Sr", "Ti", 3.90), as_given=True)
    assert same_structure(perovskite("Sr", "Ti", 3.95), perovskite("Sr", "Ti", 3.95), as_given=True)


def test_reduced_cells_compare_as_the_structures_do():
    base, strained = perovskite("Sr", "Ti", 3.95), perovskite("Sr", "Ti", 3.90)
    supercell, shifted = base * (2, 1, 1), base.copy().translate_sites(range(len(base)), [0.1, 0.2, 0.3])
    for a, b in [(base, supercell), (base, shifted), (base, strained), (base, rocksalt("Sr", "O", 5.1))]:
        for as_given in (False, True):
            ra, rb = reduced_structure(a), reduced_structure(b)
            assert same_structure(ra, rb, as_given, reduced=True) is same_structure(a, b, as_given)
    assert len(reduced_structure(supercell)) == len(base)
    assert same_structure(reduced_structure(base), reduced_structure(supercell), as_given=True, reduced=True)


def test_compact_rows_are_checked_like_the_structures_they_hold():
    items = [
        perovskite("Sr", "Ti", 3.95),
        Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]),
        rocksalt("Mg", "O", 30.0),
        perovskite("Sr", "Ti", 3.95) * (2, 2, 1),
        Molecule(["C", "O"], [[0, 0, 0], [0, 0, 0.3]]),
        Molecule(["C", "O"], [[0, 0, 0], [0, 0, 1.13]]),
    ]
    frame = pd.DataFrame([structure_row(s) for s in items], columns=list(STRUCTURE_COLUMNS))
    rows = LazyStructures(frame, np.arange(len(items)))
    settings = ValidationSettings(max_sites=10)
    expected = [check_structure(s, settings) for s in items]
    assert [r is None for r in expected] == [True, False, False, False, False, True]
    assert check_structures(rows, settings) == expected == check_structures(items, settings)
    perovskite_, salt, molecule = {"Sr", "Ti", "O"}, {"Na", "Cl"}, {"C", "O"}
    elements = [perovskite_, salt, {"Mg", "O"}, perovskite_, molecule, molecule]
    assert site_elements(rows) == site_elements(items) == elements
