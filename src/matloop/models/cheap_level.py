"""CHGNet's own static energy and formation energy per atom: the cheap level of crystals.

What the screening level ``chgnet_static`` (:mod:`matloop.validation.levels`) computes for each
crystal as given, without relaxing it: CHGNet's energy per atom, and that energy minus
Σ_el x_el μ_el, with μ_el its energy per atom of the elemental reference phase
(:func:`matloop.data.references.reference_structure`) relaxed with CHGNet itself, so that
systematic errors of the force field partly cancel. The relaxed references are cached as JSON in
the cache directory; the energies come from the same pass as the embedding
(:func:`matloop.models.foundation.embed_structures`) and share its cache.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase.build import bulk
from pymatgen.core import Element, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matloop.data.references import NOBLE_GASES, bundled_references, reference_structure
from matloop.errors import ToolInputError
from matloop.models.foundation import embed_structures

log = logging.getLogger(__name__)

REFERENCES_FILE = "chgnet_references.json"


def chgnet_references(elements: set[str], cache_dir: Path) -> dict[str, Structure]:
    """Elemental reference phases relaxed with CHGNet (shipped with the package, or relaxed once and
    cached in ``cache_dir``); noble gases as an fcc solid at twice the van der Waals radius (an
    isolated atom has no CHGNet graph)."""
    path = cache_dir / REFERENCES_FILE
    stored = {
        **bundled_references("chgnet_static", "structures"),
        **(json.loads(path.read_text()) if path.exists() else {}),
    }
    missing = sorted(elements - set(stored))
    if missing:
        from chgnet.model import StructOptimizer

        optimizer = StructOptimizer(use_device="cpu")
        for el in missing:
            start, relax_cell = reference_structure(el)
            if el in NOBLE_GASES:
                a = 2.0 * math.sqrt(2.0) * float(Element(el).van_der_waals_radius)
                start, relax_cell = AseAtomsAdaptor.get_structure(bulk(el, "fcc", a=a)), True
            result = optimizer.relax(start, relax_cell=relax_cell, fmax=0.05, steps=300, verbose=False)
            stored[el] = result["final_structure"].as_dict()
            cache_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(stored))
            log.info("CHGNet reference %s relaxed", el)
    return {el: Structure.from_dict(stored[el]) for el in elements}


def reference_energies(
    name: str, references: dict[str, Structure], cache_path: Path | None
) -> dict[str, float]:
    """The pretrained model's static energy per atom (eV/atom) of each element's reference phase."""
    elements = sorted(references)
    vectors = embed_structures(name, [references[el] for el in elements], cache_path=cache_path)
    return dict(zip(elements, map(float, vectors[:, -1]), strict=True))


def minus_references(numbers: Sequence[np.ndarray], energies: np.ndarray, mu: dict[str, float]) -> np.ndarray:
    """E/atom − Σ_el x_el μ_el of items with atomic numbers ``numbers`` and energies per atom
    ``energies``, with ``mu`` the reference energy per atom of each element present."""
    present = sorted({int(z) for zs in numbers for z in np.unique(zs)})
    by_z = np.zeros(max(present, default=0) + 1)
    by_z[present] = [mu[Element.from_Z(z).symbol] for z in present]
    ref = np.array([by_z[np.asarray(zs, dtype=np.int64)].mean() for zs in numbers])
    return np.asarray(energies, dtype=np.float64) - ref


def formation_energy(
    name: str,
    numbers: Sequence[np.ndarray],
    energies: np.ndarray,
    references: dict[str, Structure],
    *,
    cache_path: Path | None = None,
) -> np.ndarray:
    """Formation energy per atom at the pretrained model's level, from its energies per atom of
    items with atomic numbers ``numbers``: E/atom − Σ_el x_el μ_el with μ_el the model's energy per
    atom of ``references[el]`` (static, cached). Elements without a reference raise
    :class:`ToolInputError`."""
    elements = sorted({Element.from_Z(int(z)).symbol for zs in numbers for z in np.unique(zs)})
    missing = [el for el in elements if el not in references]
    if missing:
        raise ToolInputError(f"expected a reference structure for every element, got none for {missing}")
    mu = reference_energies(name, {el: references[el] for el in elements}, cache_path)
    return minus_references(numbers, energies, mu)


def chgnet_static(
    structures: Sequence[Structure], cache_path: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """CHGNet's static energy and formation energy per atom (eV/atom; NaN where CHGNet fails) of
    ``structures`` as given, and the reference energies used; embeddings are cached at
    ``cache_path`` and the relaxed references next to it."""
    energies = embed_structures("chgnet", structures, cache_path=cache_path)[:, -1]
    numbers = [np.asarray(s.atomic_numbers) for s in structures]
    elements = {el.symbol for s in structures for el in s.composition}
    mu = reference_energies("chgnet", chgnet_references(elements, cache_path.parent), cache_path)
    return energies, minus_references(numbers, energies, mu), mu
