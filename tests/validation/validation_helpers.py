"""Small structures and slices for validation tests (imported by the test modules)."""

from __future__ import annotations

import pandas as pd
from ase.build import molecule
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matloop.data.slices import DatasetSlice, save_slice


def perovskite(a: str, b: str, lattice: float) -> Structure:
    """Cubic ABO3 perovskite (5 atoms)."""
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(lattice), [a, b, "O"], [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]]
    )


def rocksalt(a: str, b: str, lattice: float) -> Structure:
    """Primitive rock-salt cell (2 atoms)."""
    prim = Lattice.from_parameters(*(3 * [lattice / 2**0.5]), 60, 60, 60)
    return Structure(prim, [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def crystal_slice(workspace, items: dict[str, Structure], props: dict[str, list[float]] | None = None) -> str:
    data = DatasetSlice(
        ids=list(items),
        structures=list(items.values()),
        properties=pd.DataFrame(props or {}, index=range(len(items))),
        units={k: "eV/atom" for k in props or {}},
        kind="crystal",
        source="test",
    )
    return save_slice(workspace, data)


def molecule_slice(workspace) -> str:
    names = ["CH4", "H2O", "NH3", "C2H4", "C6H6"]
    mols = [AseAtomsAdaptor.get_molecule(molecule(n)) for n in names]
    data = DatasetSlice(
        ids=names,
        structures=mols,
        properties=pd.DataFrame(index=range(len(names))),
        units={},
        kind="molecule",
        source="test",
    )
    return save_slice(workspace, data)
