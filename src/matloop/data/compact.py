"""Compact structure storage: element symbols, flat coordinates and a flat lattice per item.

Crystals keep fractional coordinates and the 3×3 lattice matrix (Å, row vectors); molecules keep
Cartesian coordinates (Å) and no lattice. Only ordered structures without site properties fit;
that is all a dataset source holds. :class:`LazyStructures` turns rows back into pymatgen
objects on first access, so tables of 10⁵ items load, filter and store without building them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import pandas as pd
from pymatgen.core import DummySpecies, Lattice, Molecule, Structure

STRUCTURE_COLUMNS = ("species", "coords", "lattice")


def structure_row(item: Structure | Molecule) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """``(species, flat coords, flat lattice or None)`` of an ordered structure or molecule."""
    if not item.is_ordered:
        raise ValueError("disordered sites (partial occupancies) are not supported")
    unknown = next((site.specie for site in item if isinstance(site.specie, DummySpecies)), None)
    if unknown is not None:
        raise ValueError(f"unknown element {unknown.symbol!r}")
    species = [site.specie.symbol for site in item]
    if isinstance(item, Structure):
        coords = np.asarray(item.frac_coords, dtype=np.float64).ravel()
        lattice = np.asarray(item.lattice.matrix, dtype=np.float64).ravel()
    else:
        coords, lattice = np.asarray(item.cart_coords, dtype=np.float64).ravel(), None
    if not len(species):
        raise ValueError("no sites")
    if not np.isfinite(coords).all() or (lattice is not None and not np.isfinite(lattice).all()):
        raise ValueError("non-finite coordinates or lattice")
    return species, coords, lattice


def build_structure(
    species: Sequence[str], coords: np.ndarray, lattice: np.ndarray | None
) -> Structure | Molecule:
    """The pymatgen object of one table row (inverse of :func:`structure_row`)."""
    xyz = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
    if lattice is None:
        return Molecule(list(species), xyz)
    return Structure(Lattice(np.asarray(lattice, dtype=np.float64).reshape(3, 3)), list(species), xyz)


class LazyStructures(Sequence):
    """Structures of some table rows, built (once each) on first access."""

    def __init__(self, frame: pd.DataFrame, positions: np.ndarray) -> None:
        self._species = frame["species"].to_numpy()
        self._coords = frame["coords"].to_numpy()
        self._lattice = frame["lattice"].to_numpy()
        self._positions = np.asarray(positions, dtype=np.int64)
        self._built: dict[int, Structure | Molecule] = {}

    def take(self, rows: Sequence[int]) -> LazyStructures:
        """These rows (positions in this sequence), still lazy, sharing what is already built."""
        taken = LazyStructures.__new__(LazyStructures)
        taken._species, taken._coords, taken._lattice = self._species, self._coords, self._lattice
        taken._positions = self._positions[np.asarray(rows, dtype=np.int64)]
        taken._built = self._built
        return taken

    def __len__(self) -> int:
        return len(self._positions)

    @overload
    def __getitem__(self, index: int) -> Structure | Molecule: ...
    @overload
    def __getitem__(self, index: slice) -> list[Structure | Molecule]: ...
    def __getitem__(self, index: int | slice) -> Structure | Molecule | list[Structure | Molecule]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = int(self._positions[index])
        if i not in self._built:
            self._built[i] = build_structure(self._species[i], self._coords[i], self._lattice[i])
        return self._built[i]

    def __iter__(self) -> Iterator[Structure | Molecule]:
        return (self[k] for k in range(len(self)))

    def columns(self) -> dict[str, list]:
        """The compact columns (``species``, ``coords``, ``lattice``) of these rows."""
        return {
            "species": list(self._species[self._positions]),
            "coords": list(self._coords[self._positions]),
            "lattice": list(self._lattice[self._positions]),
        }
