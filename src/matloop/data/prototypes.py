"""Unlabelled crystal candidate pools built by prototype substitution.

Each family is an ideal prototype whose sites are filled with cations and anions so that the
formula is charge balanced for some assignment of pymatgen's common oxidation states (so
``Composition.oxi_state_guesses`` finds it balanced too). The lattice constant comes from
Shannon ionic radii at the site's coordination number, or from atomic radii when an ion has
no Shannon radius, so nearest neighbours sit at the sum of the radii:

=============  ==========  ===========================================  =========================
family         formula     sites (coordination)                          lattice constant
=============  ==========  ===========================================  =========================
perovskite     ABX3        Pm-3m, A (XII), B (VI), X (VI)               max(2(r_B+r_X), √2(r_A+r_X))
rocksalt       AX          Fm-3m primitive cell, A (VI), X (VI)         2(r_A+r_X)
zincblende     AX          F-43m primitive cell, A (IV), X (IV)         4(r_A+r_X)/√3
wurtzite       AX          P6_3mc, A (IV), X (IV), u = 3/8, ideal c/a   (r_A+r_X)/(u·√(8/3))
fluorite       AX2         Fm-3m primitive cell, A (VIII), X (IV)       4(r_A+r_X)/√3
=============  ==========  ===========================================  =========================

Perovskites are kept when the Goldschmidt tolerance factor (r_A+r_X)/(√2(r_B+r_X)) lies in
[0.8, 1.1] and the octahedral factor r_B/r_X in [0.37, 0.9]; every
candidate's shortest bond is at least 1.5 Å. Ids read ``<family>-<A><B><X>3`` in site order,
e.g. ``perovskite-SrTiO3``, ``rocksalt-MgO``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Literal, NamedTuple, get_args

import numpy as np
import pandas as pd
from pymatgen.core import Element, Lattice, Structure

from matloop.data.slices import DatasetSlice
from matloop.errors import ToolInputError, invalid_choice

Family = Literal["perovskite", "rocksalt", "zincblende", "wurtzite", "fluorite"]
FAMILIES: tuple[str, ...] = get_args(Family)
DEFAULT_FAMILIES: tuple[Family, ...] = ("perovskite", "rocksalt", "zincblende", "wurtzite", "fluorite")

#: Anions and their charge.
ANIONS: dict[str, int] = {
    "O": -2, "S": -2, "Se": -2, "Te": -2, "N": -3, "P": -3, "As": -3,
    "F": -1, "Cl": -1, "Br": -1, "I": -1,
}  # fmt: skip
MIN_BOND = 1.5
TOLERANCE_RANGE = (0.8, 1.1)
OCTAHEDRAL_RANGE = (0.37, 0.9)  # lower end admits LaAlO3
_U = 3 / 8
_ROMAN = {"I": 1, "V": 5, "X": 10}


class Candidate(NamedTuple):
    """A recipe for one structure: id, species on the prototype's sites, lattice constant."""

    item_id: str
    species: tuple[str, ...]
    a: float


def _roman(text: str) -> int:
    """Leading Roman numeral of a Shannon coordination label ('VI', 'IVSQ', 'IIIPY')."""
    digits = re.match(r"[IVX]+", text)
    if digits is None:
        return 0
    values = [_ROMAN[c] for c in digits.group()]
    return sum(-v if nxt > v else v for v, nxt in zip(values, [*values[1:], 0], strict=True))


@cache
def _shannon_radius(symbol: str, charge: int, cn: int) -> float | None:
    """Shannon ionic radius in Å at the coordination closest to ``cn`` (high spin preferred)."""
    table = Element(symbol).data.get("Shannon radii", {}).get(str(charge))
    if not table:
        return None
    label = min(table, key=lambda c: (abs(_roman(c) - cn), c))
    spins = table[label]
    entry = spins.get("") or spins.get("High Spin") or next(iter(spins.values()))
    return float(entry["ionic_radius"])


def _radii(ions: Sequence[tuple[str, int, int]]) -> list[float] | None:
    """Radii of (symbol, charge, coordination) ions: all Shannon, else all atomic, else None."""
    shannon = [_shannon_radius(*ion) for ion in ions]
    if all(r is not None for r in shannon):
        return [float(r) for r in shannon if r is not None]
    atomic = [Element(symbol).atomic_radius for symbol, _, _ in ions]
    if all(r is not None for r in atomic):
        return [float(r) for r in atomic if r is not None]
    return None


@cache
def _cations() -> dict[str, tuple[int, ...]]:
    """Stable metals and metalloids (Z ≤ 83) with their positive common oxidation states."""
    found: dict[str, tuple[int, ...]] = {}
    for el in Element:
        if el.Z > 83 or el.is_radioactive or el.symbol in ANIONS or not (el.is_metal or el.is_metalloid):
            continue
        states = tuple(sorted(s for s in el.common_oxidation_states if s > 0))
        if states:
            found[el.symbol] = states
    return found


def _binary(name: str, cn: tuple[int, int], n_anions: int, a_per_bond: float) -> tuple[Candidate, ...]:
    """A X_n candidates: charge q_A = n·|q_X|, lattice constant ``a_per_bond·(r_A + r_X)``."""
    out = []
    for cation, states in _cations().items():
        for anion, q in ANIONS.items():
            if -q * n_anions not in states:
                continue
            radii = _radii([(cation, -q * n_anions, cn[0]), (anion, q, cn[1])])
            if radii is None or sum(radii) < MIN_BOND:
                continue
            suffix = str(n_anions) if n_anions > 1 else ""
            species = (cation, *[anion] * n_anions)
            out.append(Candidate(f"{name}-{cation}{anion}{suffix}", species, a_per_bond * sum(radii)))
    return tuple(out)


def _perovskites() -> tuple[Candidate, ...]:
    """ABX3 with q_A + q_B = 3|q_X| and tolerance/octahedral factors in range; charges giving a
    tolerance factor closest to 1 are kept."""
    cations = _cations()
    out = []
    for a_site, a_states in cations.items():
        for b_site, b_states in cations.items():
            if a_site == b_site:
                continue
            for anion, q in ANIONS.items():
                best: tuple[float, float] | None = None
                for qa in a_states:
                    qb = -3 * q - qa
                    if qb not in b_states:
                        continue
                    radii = _radii([(a_site, qa, 12), (b_site, qb, 6), (anion, q, 6)])
                    if radii is None:
                        continue
                    r_a, r_b, r_x = radii
                    t = (r_a + r_x) / (math.sqrt(2) * (r_b + r_x))
                    mu = r_b / r_x
                    if (
                        not TOLERANCE_RANGE[0] <= t <= TOLERANCE_RANGE[1]
                        or not OCTAHEDRAL_RANGE[0] <= mu <= OCTAHEDRAL_RANGE[1]
                        or r_b + r_x < MIN_BOND
                    ):
                        continue
                    a = max(2 * (r_b + r_x), math.sqrt(2) * (r_a + r_x))
                    if best is None or abs(t - 1) < abs(best[0] - 1):
                        best = (t, a)
                if best is not None:
                    species = (a_site, b_site, anion, anion, anion)
                    out.append(Candidate(f"perovskite-{a_site}{b_site}{anion}3", species, best[1]))
    return tuple(out)


_FCC = np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
_BUILDERS: dict[str, Callable[[float], tuple[Lattice, list[list[float]]]]] = {
    "perovskite": lambda a: (
        Lattice.cubic(a),
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    ),
    "rocksalt": lambda a: (Lattice(a * _FCC), [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "zincblende": lambda a: (Lattice(a * _FCC), [[0, 0, 0], [0.25, 0.25, 0.25]]),
    "fluorite": lambda a: (Lattice(a * _FCC), [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]]),
    "wurtzite": lambda a: (
        Lattice.hexagonal(a, a * math.sqrt(8 / 3)),
        [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, _U], [2 / 3, 1 / 3, 0.5 + _U]],
    ),
}


@cache
def family_candidates(family: Family) -> tuple[Candidate, ...]:
    """All charge-balanced candidates of one prototype family, in a fixed order."""
    if family == "perovskite":
        return _perovskites()
    if family == "rocksalt":
        return _binary("rocksalt", (6, 6), 1, 2.0)
    if family == "zincblende":
        return _binary("zincblende", (4, 4), 1, 4 / math.sqrt(3))
    if family == "wurtzite":
        return _binary("wurtzite", (4, 4), 1, 1 / (_U * math.sqrt(8 / 3)))
    if family == "fluorite":
        return _binary("fluorite", (8, 4), 2, 4 / math.sqrt(3))
    raise invalid_choice("a prototype family", family, FAMILIES)


def _build(candidate: Candidate) -> Structure:
    family = candidate.item_id.split("-", 1)[0]
    lattice, frac = _BUILDERS[family](candidate.a)
    species = list(candidate.species)
    if family == "wurtzite":
        species = [species[0], species[0], species[1], species[1]]
    return Structure(lattice, species, frac)


def build_prototype_pool(
    *,
    families: Sequence[Family] = DEFAULT_FAMILIES,
    elements: Sequence[str] | None = None,
    max_items: int | None = None,
    seed: int = 0,
) -> DatasetSlice:
    """An unlabelled pool of prototype crystals (kind ``crystal``, no property columns).

    Args:
        families: prototype families to include (perovskite, rocksalt, zincblende, wurtzite, fluorite).
        elements: when given, only compounds made entirely of these elements.
        max_items: subsample to at most this many candidates (seeded, order kept).
        seed: seed of the subsample.
    """
    for family in families:
        if family not in FAMILIES:
            raise invalid_choice("a prototype family", family, FAMILIES)
    allowed: set[str] | None = None
    if elements is not None:
        unknown = [e for e in elements if not Element.is_valid_symbol(e)]
        if unknown:
            raise ToolInputError(
                f"expected element symbols, got {unknown}; valid values are symbols such as 'Sr', 'Ti', 'O'"
            )
        allowed = set(elements)
    pool = [
        c
        for family in dict.fromkeys(families)
        for c in family_candidates(family)
        if allowed is None or set(c.species) <= allowed
    ]
    n_available = len(pool)
    if max_items is not None and max_items < len(pool):
        if max_items < 0:
            raise ToolInputError(f"expected max_items >= 0, got {max_items}")
        keep = np.sort(np.random.default_rng(seed).choice(len(pool), size=max_items, replace=False))
        pool = [pool[k] for k in keep]
    ids = [c.item_id for c in pool]
    return DatasetSlice(
        ids=ids,
        structures=[_build(c) for c in pool],
        properties=pd.DataFrame(index=ids),
        units={},
        kind="crystal",
        source="prototypes",
        meta={
            "families": list(dict.fromkeys(families)),
            "elements": None if elements is None else sorted(allowed or ()),
            "n_available": n_available,
            "max_items": max_items,
            "seed": seed,
        },
    )
