"""Elemental reference phases for formation energies.

Each element gets one ground-state-like structure, relaxed at the same level as the compounds:
diatomic gases (H₂, N₂, O₂, F₂, Cl₂, Br₂, I₂) as a molecule in a 10 Å box (positions only),
noble gases as one atom in a box, everything else as ASE's reference crystal
(``ase.data.reference_states``: fcc/bcc/hcp/diamond/... with experimental lattice constants)
or, where ASE has no simple prototype, an fcc cell sized from the atomic radius (cell relaxed).

The CHGNet references of elements H–Pu ship with the package (``bundled/references.json``, made
by ``scripts/bundle_references.py``, with the versions that made them): a new workspace or an
empty cache starts with them, and they are used only while the installed CHGNet is the version
that computed them.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib import resources
from importlib.metadata import version
from typing import Any

from ase.build import bulk
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

#: Bond lengths (Å) of the diatomic elemental gases.
DIATOMIC_BOND = {"H": 0.74, "N": 1.10, "O": 1.21, "F": 1.42, "Cl": 1.99, "Br": 2.28, "I": 2.67}
NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn"})
BOX = 10.0


def reference_structure(element: str) -> tuple[Structure, bool]:
    """The reference phase of ``element`` and whether its cell may relax (False for gases in a box)."""
    if element in DIATOMIC_BOND:
        d = DIATOMIC_BOND[element] / BOX
        coords = [[0.5 - d / 2, 0.5, 0.5], [0.5 + d / 2, 0.5, 0.5]]
        return Structure(Lattice.cubic(BOX), [element] * 2, coords), False
    if element in NOBLE_GASES:
        return Structure(Lattice.cubic(BOX), [element], [[0.5, 0.5, 0.5]]), False
    try:
        atoms = bulk(element)
    except (ValueError, KeyError, RuntimeError):
        radius = Element(element).atomic_radius or 1.5
        atoms = bulk(element, "fcc", a=2.0 * math.sqrt(2.0) * float(radius))
    return AseAtomsAdaptor.get_structure(atoms), True


@cache
def _bundled() -> dict[str, Any]:
    path = resources.files("matloop.data") / "bundled" / "references.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def bundled_references(level: str, kind: str = "energies", package: str = "chgnet") -> dict[str, Any]:
    """The shipped references of ``level``: ``energies`` per atom (eV/atom, ``chgnet``) or relaxed
    ``structures`` as dicts (``chgnet_static``); nothing when none ship or the installed ``package``
    is not the version that computed them."""
    entry = _bundled().get(level, {})
    if entry.get("code_version") != version(package):
        return {}
    return dict(entry.get(kind, {}))
