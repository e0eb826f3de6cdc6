"""Thermodynamic stability at one validation level: the convex hull of formation energies.

Labels are formation energies per atom against elemental references relaxed at the same level,
so each element sits at 0 by definition. The hull of a chemical system is pymatgen's
``PhaseDiagram`` of the phases whose elements lie in it — the reference phases (known phases
computed at the level) and the campaign's labelled candidates — plus the elements at 0. One
:class:`Hull` holds one level; phases of another level are refused (levels are never mixed).

For a labelled candidate two numbers are reported: ``e_above_hull`` against the current hull
(references ∪ every labelled candidate; 0 on the hull) and ``e_above_references`` against the
reference phases alone (negative: it breaks the known hull). When a new stable candidate lands
the hull moves and earlier hits are re-scored by building a new :class:`Hull`.

For selection, :meth:`Hull.energy` evaluates the hull at many compositions at once: a convex
piecewise-linear function is the maximum of its facets' planes, so the hull of a system is one
matrix product (facets from pymatgen's ``PhaseDiagram``), cached per chemical system.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from pymatgen.core import Composition, Element

from matloop.errors import ToolInputError

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram

#: The label a hull is built from (per atom, against elemental references at the same level).
HULL_PROPERTY = "formation_energy_per_atom"
#: Distance to the hull (eV/atom) below which a phase counts as on it.
ON_HULL_TOL = 1e-6
#: The near-stable thresholds reported next to the stable set (eV/atom).
NEAR_STABLE = (0.025, 0.050)


@cache
def _composition(formula: str) -> Composition:
    return Composition(formula)


def chemical_system(formula: str) -> str:
    """``"Li-O"``: the sorted element symbols of ``formula``."""
    return "-".join(sorted(el.symbol for el in _composition(formula).elements))


@dataclass(frozen=True)
class Phase:
    """A phase with a formation energy per atom (eV/atom) at one level."""

    item_id: str
    formula: str
    formation_energy_per_atom: float
    reference: bool = False

    @property
    def composition(self) -> Composition:
        return _composition(self.formula)


@dataclass(frozen=True)
class Stability:
    """Where one labelled phase lies relative to the hull."""

    item_id: str
    formula: str
    formation_energy_per_atom: float
    e_above_hull: float
    e_above_references: float
    decomposition: dict[str, float] = field(default_factory=dict)

    @property
    def stable(self) -> bool:
        return self.e_above_hull <= ON_HULL_TOL


def _planes(pd: PhaseDiagram) -> np.ndarray:
    """[facets, dim] plane coefficients (a over the fractions of ``pd.elements[1:]``, then b)."""
    rows = []
    for facet in pd.facets:
        points = np.asarray(pd.qhull_data)[facet]
        mat = np.column_stack([points[:, :-1], np.ones(len(points))])
        rows.append(np.linalg.solve(mat, points[:, -1]))
    return np.asarray(rows)


class Hull:
    """The convex hull of formation energies at ``level`` over reference phases and candidates.

    Args:
        level: the validation level of every phase.
        references: known phases computed at ``level`` (elements need not be given).
        candidates: the campaign's labelled candidates at ``level``.
    """

    def __init__(
        self, level: str, references: Iterable[Phase] = (), candidates: Iterable[Phase] = ()
    ) -> None:
        self.level = level
        self.references = tuple(references)
        self.candidates = tuple(candidates)
        self._by_elements: dict[frozenset[str], list[Phase]] = defaultdict(list)
        for phase in (*self.references, *self.candidates):
            if not np.isfinite(phase.formation_energy_per_atom):
                raise ValueError(f"phase {phase.item_id}: expected a finite formation energy")
            self._by_elements[frozenset(el.symbol for el in phase.composition.elements)].append(phase)
        self._diagrams: dict[frozenset[str], PhaseDiagram] = {}
        self._planes: dict[frozenset[str], np.ndarray] = {}

    def with_candidates(self, candidates: Iterable[Phase], level: str) -> Hull:
        """A new hull with more labelled candidates (the hull moves; score again with it). Only
        the chemical systems that contain a new phase are rebuilt."""
        if level != self.level:
            raise ToolInputError(
                f"level: expected {self.level!r} (levels are never mixed on one hull), got {level!r}"
            )
        added = tuple(candidates)
        hull = Hull(self.level, self.references, (*self.candidates, *added))
        new = {frozenset(el.symbol for el in p.composition.elements) for p in added}
        for system, diagram in self._diagrams.items():
            if not any(elements <= system for elements in new):
                hull._diagrams[system] = diagram
                if system in self._planes:
                    hull._planes[system] = self._planes[system]
        return hull

    def references_only(self) -> Hull:
        return Hull(self.level, self.references)

    def diagram(self, system: Iterable[str]) -> PhaseDiagram:
        """pymatgen's ``PhaseDiagram`` of one chemical system (cached)."""
        key = frozenset(system)
        if key not in self._diagrams:
            from pymatgen.analysis.phase_diagram import (  # scipy's interpolate: slow import
                PDEntry,
                PhaseDiagram,
            )

            entries = [PDEntry(Composition(el), 0.0, name=el) for el in sorted(key)]
            for elements, phases in self._by_elements.items():
                if elements <= key:
                    entries += [
                        PDEntry(
                            p.composition,
                            p.formation_energy_per_atom * p.composition.num_atoms,
                            name=p.item_id,
                        )
                        for p in phases
                    ]
            self._diagrams[key] = PhaseDiagram(entries, elements=[Element(el) for el in sorted(key)])
        return self._diagrams[key]

    def energy(self, formulas: Sequence[str]) -> np.ndarray:
        """The hull's formation energy per atom (eV/atom) at each composition."""
        out = np.zeros(len(formulas))
        groups: dict[frozenset[str], list[int]] = defaultdict(list)
        for i, formula in enumerate(formulas):
            groups[frozenset(el.symbol for el in _composition(formula).elements)].append(i)
        for system, positions in groups.items():
            if len(system) < 2:
                continue
            if system not in self._planes:
                self._planes[system] = _planes(self.diagram(system))
            elements = sorted(system)[1:]
            x = np.array(
                [[_composition(formulas[i]).get_atomic_fraction(el) for el in elements] for i in positions]
            )
            planes = self._planes[system]
            out[positions] = (x @ planes[:, :-1].T + planes[:, -1]).max(axis=1)
        return out

    def distance(self, formulas: Sequence[str], formation_energies: np.ndarray) -> np.ndarray:
        """Formation energy minus the hull at each composition (eV/atom): for predicted energies
        μ, the predicted distance to the hull μ − hull(composition) that selection ranks."""
        return np.asarray(formation_energies, dtype=np.float64) - self.energy(formulas)

    def predicted_distance(self, phases: Sequence[Phase]) -> np.ndarray:
        """Each of ``phases`` (predictions, not labels) against the hull they make together with
        this one (eV/atom): its height above that hull (> 0), or for the phases on it, its depth
        below this hull (≤ 0). Of several phases predicted in one chemical system only those on
        their common hull rank as stable, as when a whole pool's screening energies make one hull."""
        formulas = [p.formula for p in phases]
        energies = np.array([p.formation_energy_per_atom for p in phases])
        below = self.distance(formulas, energies)
        # only phases below this hull can be on the common one: the others change no diagram
        competing = [p for p, d in zip(phases, below, strict=True) if d < -ON_HULL_TOL]
        above = self.with_candidates(competing, self.level).distance(formulas, energies)
        return np.where(above > ON_HULL_TOL, above, np.minimum(below, 0.0))

    def stability(self, phases: Sequence[Phase] | None = None) -> list[Stability]:
        """Each labelled candidate (or ``phases``) against this hull and against the references
        alone, with its decomposition products (fractions of the formula's atoms)."""
        phases = list(self.candidates if phases is None else phases)
        formulas = [p.formula for p in phases]
        energies = np.array([p.formation_energy_per_atom for p in phases])
        e_hull = self.distance(formulas, energies)
        e_ref = self.references_only().distance(formulas, energies)
        out = []
        for p, dh, dr in zip(phases, e_hull, e_ref, strict=True):
            out.append(
                Stability(
                    item_id=p.item_id,
                    formula=p.composition.reduced_formula,
                    formation_energy_per_atom=p.formation_energy_per_atom,
                    e_above_hull=float(max(dh, 0.0)) if dh > -ON_HULL_TOL else float(dh),
                    e_above_references=float(dr),
                    decomposition=self.decomposition(p.formula) if dh > ON_HULL_TOL else {},
                )
            )
        return out

    def decomposition(self, formula: str) -> dict[str, float]:
        """The hull phases ``formula`` decomposes into, ``{id or element: fraction of atoms}``."""
        system = [el.symbol for el in _composition(formula).elements]
        decomp = self.diagram(system).get_decomposition(_composition(formula))
        return {str(e.name): round(float(x), 6) for e, x in decomp.items()}

    def completeness(self, system: Iterable[str]) -> int:
        """How many non-elemental reference phases lie in the chemical system (0: only elements,
        so a "stable" candidate there may be an artefact of the missing phases)."""
        key = frozenset(system)
        return sum(
            len([p for p in phases if p.reference])
            for elements, phases in self._by_elements.items()
            if len(elements) > 1 and elements <= key
        )
