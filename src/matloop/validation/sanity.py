"""Structure sanity checks run before anything is submitted to an oracle.

A structure that fails is ``rejected`` with the reason; it never reaches a calculation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Molecule, Structure

from matloop.data.graphs import neighbor_pairs
from matloop.settings import ValidationSettings

#: Volume per atom accepted for periodic cells, in Å³ (dense metals ~6, open frameworks ~60).
VOLUME_PER_ATOM_RANGE = (2.0, 150.0)
_PERIODIC = np.ones(3, dtype=np.int64)


def check_structure(item: Structure | Molecule, settings: ValidationSettings) -> str | None:
    """The reason ``item`` must not be calculated, or ``None`` when it looks physical.

    Checks: at most ``settings.max_sites`` atoms, no atom closer than ``settings.min_distance``
    Å to another (or, in a crystal, to a periodic image of itself), and (for crystals) a volume
    per atom inside :data:`VOLUME_PER_ATOM_RANGE`.
    """
    if isinstance(item, Structure):
        pbc = np.asarray(item.pbc, dtype=np.int64)
        return _problem(np.asarray(item.cart_coords), item.lattice.matrix, pbc, settings)
    return _problem(np.asarray(item.cart_coords), None, None, settings)


def check_structures(items: Sequence[Structure | Molecule], settings: ValidationSettings) -> list[str | None]:
    """:func:`check_structure` of each item, read from compact rows without building pymatgen
    objects where the sequence has them (``columns()``, as dataset slices do: fractional
    coordinates of periodic crystals, Cartesian ones of molecules)."""
    columns = getattr(items, "columns", None)
    if not callable(columns):
        return [check_structure(item, settings) for item in items]
    rows, out = columns(), []
    for coords, lattice in zip(rows["coords"], rows["lattice"], strict=True):
        xyz = np.asarray(coords, dtype=np.float64).reshape(-1, 3)
        if lattice is None:
            out.append(_problem(xyz, None, None, settings))
        else:
            matrix = np.asarray(lattice, dtype=np.float64).reshape(3, 3)
            out.append(_problem(xyz @ matrix, matrix, _PERIODIC, settings))
    return out


def site_elements(items: Sequence[Structure | Molecule]) -> list[set[str]]:
    """The element symbols of each item (from compact rows where the sequence has them)."""
    columns = getattr(items, "columns", None)
    if callable(columns):
        return [set(species) for species in columns()["species"]]
    return [{el.symbol for el in item.composition.elements} for item in items]


def _problem(
    cart: np.ndarray, lattice: np.ndarray | None, pbc: np.ndarray | None, settings: ValidationSettings
) -> str | None:
    """:func:`check_structure` of Cartesian ``cart`` (a crystal: in the row-vector ``lattice``,
    periodic along ``pbc``; a molecule: ``lattice`` None)."""
    n = len(cart)
    if n == 0:
        return "empty structure"
    if n > settings.max_sites:
        return f"{n} atoms exceeds the limit of {settings.max_sites} (settings.validation.max_sites)"
    *_, dists = neighbor_pairs(cart, lattice, pbc, settings.min_distance)
    if len(dists):
        return f"atoms {float(dists.min()):.2f} Å apart, closer than {settings.min_distance} Å"
    if lattice is not None:
        lo, hi = VOLUME_PER_ATOM_RANGE
        vpa = abs(float(np.linalg.det(lattice))) / n
        if not lo <= vpa <= hi:
            return f"volume per atom {vpa:.1f} Å³ outside [{lo}, {hi}] Å³"
    return None


def same_structure(
    a: Structure | Molecule, b: Structure | Molecule, as_given: bool = False, reduced: bool = False
) -> bool:
    """Whether two items are the same material: pymatgen ``StructureMatcher`` for crystals (with
    ``as_given``, for a level that does not relax them, also the same lattice and positions:
    no volume rescaling, 1 % tolerances), same composition and sorted interatomic distances
    (±0.01 Å) for molecules. ``reduced``: both crystals are already their
    :func:`reduced_structure`, which the matcher then skips computing."""
    if type(a) is not type(b) or a.composition.reduced_composition != b.composition.reduced_composition:
        return False
    if isinstance(a, Structure) and isinstance(b, Structure):
        from pymatgen.analysis.structure_matcher import StructureMatcher

        if reduced and len(a) != len(b):  # the matcher maps primitive cells site to site
            return False
        tight = {"ltol": 0.01, "stol": 0.01, "angle_tol": 0.5, "scale": False} if as_given else {}
        return StructureMatcher(**tight).fit(a, b, skip_structure_reduction=reduced)
    return same_distances(molecule_distances(a), molecule_distances(b))


def reduced_structure(structure: Structure) -> Structure:
    """The cell ``StructureMatcher`` compares a crystal in: Niggli-reduced, then primitive. Computed
    once per crystal, it spares :func:`same_structure` (``reduced=True``) redoing it for every pair."""
    return structure.get_reduced_structure("niggli").get_primitive_structure()


def molecule_distances(molecule: Molecule) -> np.ndarray:
    """Sorted interatomic distances of a molecule: what identifies it for :func:`same_structure`."""
    return np.sort(np.asarray(molecule.distance_matrix)[np.triu_indices(len(molecule), 1)])


def same_distances(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two molecules' :func:`molecule_distances` agree within 0.01 Å."""
    return a.shape == b.shape and bool(np.allclose(a, b, atol=DISTANCE_TOLERANCE))


#: Tolerance of :func:`same_distances` (Å) and the width of a :func:`distance_cell` (Å), which
#: exceeds the tolerance plus ``np.allclose``'s relative part for any distance below 500 Å.
DISTANCE_TOLERANCE, CELL_WIDTH = 0.01, 0.02
#: Width of a :func:`volume_cell`: ln(1.1), twice the volume difference a match taken as given allows.
VOLUME_CELL_WIDTH = 0.0953


def volume_cell(structure: Structure) -> int:
    """A grid cell of a crystal's volume per atom, in steps of ``VOLUME_CELL_WIDTH`` of its
    logarithm. The tolerances of :func:`same_structure` taken as given (1 % on the lengths and
    0.5° on the angles of the reduced lattices, no rescaling) keep two matching crystals' volumes
    per atom within about 5 %, so their cells are the same or neighbours, whatever cell (primitive
    or super-) each is given in."""
    return int(np.log(structure.volume / len(structure)) // VOLUME_CELL_WIDTH)


def distance_cell(distances: np.ndarray) -> tuple[int, int, int]:
    """A grid cell of a molecule's :func:`molecule_distances`: their count, and their mean and
    largest value in steps of ``CELL_WIDTH``. Two molecules that :func:`same_distances` accepts
    differ by less than the tolerance in every distance, hence in the mean and the largest, so
    their cells are the same or neighbours: a fingerprint to compare near neighbours only."""
    if not len(distances):
        return (0, 0, 0)
    return (len(distances), int(distances.mean() // CELL_WIDTH), int(distances[-1] // CELL_WIDTH))
