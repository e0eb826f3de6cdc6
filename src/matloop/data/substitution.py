"""Candidate crystals by data-mined ion substitution of known structures (Hautier et al.,
Inorg. Chem. 50, 656 (2011)).

Each template (a known, ordered crystal of a source table: the bundled Materials Project sets,
a user's file) gets oxidation states from pymatgen's ``Composition.oxi_state_guesses`` (the most
likely charge-balanced assignment of common states). Every species ``s`` of the template may be
replaced by a species ``t`` of the requested elements; a whole substitution ``{s_i → t_i}``
(one-to-one, at least one ``t_i ≠ s_i``) is kept when the product of pymatgen's conditional
probabilities ``SubstitutionProbability.cond_prob(t_i, s_i)`` (the lambda table shipped with
pymatgen) exceeds ``threshold`` — the probability model of pymatgen's ``Substitutor``, with the
branch and bound restricted to the requested elements — and the result is charge balanced.

Volume: the reference lattice scaling rule of pymatgen's ``RLSVolumePredictor`` (ionic radii,
atomic radii where a species has none):
``V = V_template · (Σ_k r'_k n_k^(1/3) / Σ_k r_k n_k^(1/3))³`` over the species ``k`` with
``n_k`` sites; the lattice is scaled isotropically, so the template's space group is kept.

Duplicates: candidates are grouped by a cheap key (reduced formula, space group of the template)
and only within a group compared with pymatgen's ``StructureMatcher``; a candidate that matches a
template of the source (a known phase) is not new and is dropped as well. Ids read
``sub-<template id>-<reduced formula>`` (``-2``, ``-3`` ... when one template gives several
distinct candidates of one formula), in the templates' order; the result is deterministic.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from pymatgen.core import Composition, Element, Species, Structure

from matloop.data.compact import build_structure
from matloop.data.table import SourceTable
from matloop.errors import ToolInputError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 1e-3
_PROGRESS_EVERY = 500


class SubstitutionCounts(BaseModel):
    """What generation did: templates used and rejected, candidates kept and dropped, and why."""

    templates: int = Field(description="Templates read from the source.")
    templates_rejected: dict[str, int] = Field(description="Templates not used, per reason.")
    substitutions: int = Field(description="Substitutions above the probability threshold.")
    rejected: dict[str, int] = Field(description="Substitutions dropped before deduplication, per reason.")
    duplicates: int = Field(description="Candidates equal to an earlier candidate (StructureMatcher).")
    known_phases: int = Field(description="Candidates equal to a template of the source: not new.")
    generated: int = Field(description="Distinct new candidates.")


class SubstitutionQuery(BaseModel):
    """What to generate (and the key of the cached result)."""

    templates: str = Field(
        "mp_formation_energy", description="Crystal source whose structures are substituted."
    )
    elements: list[str] = Field(default_factory=list, description="Elements the candidates may contain.")
    threshold: float = Field(DEFAULT_THRESHOLD, description="Smallest substitution probability kept.")
    max_sites: int | None = Field(None, description="Use only templates with at most this many sites.")


@cache
def _probability_model():
    from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability

    return SubstitutionProbability()


@cache
def _table_species() -> tuple[Species, ...]:
    return tuple(sorted(_probability_model().species, key=str))


#: pymatgen guesses oxidation states of reduced formulas of at most this many sites
_GUESS_SITES = 20


@cache
def _oxidation_states(formula: str) -> tuple[tuple[str, float], ...] | None:
    """The most likely charge-balanced oxidation state of each element, or None."""
    guesses = Composition(formula).oxi_state_guesses(max_sites=-_GUESS_SITES)
    return tuple(sorted(guesses[0].items())) if guesses else None


def _radius(species: Species) -> float | None:
    with warnings.catch_warnings():  # a missing radius is handled: atomic radii instead
        warnings.simplefilter("ignore")
        radius = species.ionic_radius
    return float(radius) if radius is not None else None


def rls_volume(
    volume: float, old: Sequence[Species], new: Sequence[Species], counts: Sequence[int]
) -> float | None:
    """The volume of a template of ``volume`` after replacing species ``old[k]`` (``counts[k]``
    sites) by ``new[k]``: pymatgen's reference lattice scaling (ionic radii, else atomic; None
    when an element has neither)."""
    radii = [_radius(s) for s in [*old, *new]]
    if any(r is None for r in radii):
        radii = [s.element.atomic_radius for s in [*old, *new]]
        if any(r is None for r in radii):
            return None
    weights = [n ** (1 / 3) for n in counts]
    k = len(old)
    before = sum(float(r) * w for r, w in zip(radii[:k], weights, strict=True))  # type: ignore[arg-type]
    after = sum(float(r) * w for r, w in zip(radii[k:], weights, strict=True))  # type: ignore[arg-type]
    return volume * (after / before) ** 3


def check_substitution_args(elements: Sequence[str] | None, threshold: float) -> list[str]:
    """The requested element symbols, validated with the threshold (one clear line each)."""
    if not elements:
        raise ToolInputError(
            "elements: expected a list of element symbols the candidates may contain, got none"
        )
    unknown = [e for e in elements if not Element.is_valid_symbol(e)]
    if unknown:
        raise ToolInputError(f"elements: expected element symbols such as 'Li', 'O', got {unknown}")
    if not 0 < threshold <= 1:
        raise ToolInputError(f"threshold: expected a probability in (0, 1], got {threshold}")
    return sorted(set(elements))


@dataclass
class _Template:
    item_id: str
    position: int
    species: list[str]
    coords: np.ndarray
    lattice: np.ndarray

    @property
    def structure(self) -> Structure:
        return build_structure(self.species, self.coords, self.lattice)  # type: ignore[return-value]


def _substitutions(
    old: Sequence[Species], allowed: Sequence[Species], threshold: float
) -> list[tuple[tuple[Species, ...], float]]:
    """One-to-one maps of ``old`` into ``allowed`` with Π cond_prob(new, old) > threshold
    (branch and bound on the best remaining factors), in a fixed order."""
    model = _probability_model()
    options = []
    for s in old:
        probs = sorted(((model.cond_prob(t, s), str(t), t) for t in allowed), key=lambda x: (-x[0], x[1]))
        options.append([(p, t) for p, _, t in probs if p > 0])
    best = [opts[0][0] if opts else 0.0 for opts in options]
    out: list[tuple[tuple[Species, ...], float]] = []

    def recurse(chosen: tuple[Species, ...], prob: float) -> None:
        i = len(chosen)
        if i == len(old):
            if chosen != tuple(old):
                out.append((chosen, prob))
            return
        bound = prob * math.prod(best[i + 1 :])
        for p, t in options[i]:
            if bound * p <= threshold:
                break
            if t not in chosen:
                recurse((*chosen, t), prob * p)

    recurse((), 1.0)
    return out


def generate_substitutions(
    templates: SourceTable,
    elements: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_sites: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[SourceTable, SubstitutionCounts]:
    """New candidate crystals made of ``elements`` from the crystals of ``templates``.

    Args:
        templates: a crystal source table (its items are the known phases).
        elements: element symbols the candidates may contain (all of their sites).
        threshold: smallest substitution probability kept, in (0, 1].
        max_sites: use only templates with at most this many sites.
        progress: called with a line every few hundred templates.
    """
    allowed_symbols = check_substitution_args(elements, threshold)
    if templates.kind != "crystal":
        raise ToolInputError(
            f"templates: expected a crystal source, got {templates.source!r} ({templates.kind})"
        )
    allowed = [s for s in _table_species() if s.symbol in set(allowed_symbols)]
    say = progress or log.info
    frame = templates.frame
    rejected_templates: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    n_subs = 0
    # (reduced formula, space group) -> candidate rows, each (template, new species per site, volume)
    groups: dict[tuple[str, int], list[tuple[_Template, list[str], float]]] = defaultdict(list)
    order: list[tuple[str, int]] = []
    spacegroups: dict[int, int] = {}
    for pos, (item_id, species, coords, lattice) in enumerate(
        frame[["id", "species", "coords", "lattice"]].itertuples(index=False)
    ):
        if pos and pos % _PROGRESS_EVERY == 0:
            say(f"substitution: {pos}/{len(frame)} templates, {n_subs} substitutions so far")
        species = list(species)
        if max_sites is not None and len(species) > max_sites:
            rejected_templates["more sites than max_sites"] += 1
            continue
        counts = Counter(species)
        if Composition(counts).reduced_composition.num_atoms > _GUESS_SITES:
            rejected_templates[
                f"oxidation states not guessed (over {_GUESS_SITES} sites in the reduced formula)"
            ] += 1
            continue
        states = _oxidation_states(Composition(counts).formula)
        if states is None:
            rejected_templates["no charge-balanced oxidation states"] += 1
            continue
        if any(abs(q - round(q)) > 1e-6 for _, q in states):
            rejected_templates["mixed valence (non-integer oxidation state)"] += 1
            continue
        old = [Species(el, round(q)) for el, q in states]
        if any(s not in _probability_model().species for s in old):
            rejected_templates["a species outside the substitution table"] += 1
            continue
        subs = _substitutions(old, allowed, threshold)
        if not subs:
            continue
        template = _Template(str(item_id), pos, species, np.asarray(coords), np.asarray(lattice))
        volume = abs(float(np.linalg.det(template.lattice.reshape(3, 3))))
        n = [counts[s.symbol] for s in old]
        for new, _prob in subs:
            n_subs += 1
            if sum(t.oxi_state * k for t, k in zip(new, n, strict=True)) != 0:
                rejected["not charge balanced"] += 1
                continue
            new_volume = rls_volume(volume, old, new, n)
            if new_volume is None:
                rejected["no radius to scale the volume"] += 1
                continue
            mapping = {s.symbol: t.symbol for s, t in zip(old, new, strict=True)}
            new_species = [mapping[el] for el in species]
            formula = Composition(Counter(new_species)).reduced_formula
            if pos not in spacegroups:
                spacegroups[pos] = _spacegroup(template.structure)
            key = (formula, spacegroups[pos])
            if key not in groups:
                order.append(key)
            groups[key].append((template, new_species, new_volume))
    say(f"substitution: {len(frame)} templates done, {n_subs} substitutions, grouping {len(order)} keys")

    from pymatgen.core.structure_matcher import StructureMatcher  # scipy.optimize: slow import

    known = _known_phases(frame, {formula for formula, _ in order}, spacegroups)
    matcher = StructureMatcher()
    rows: list[tuple[int, str, list[str], np.ndarray, np.ndarray]] = []
    duplicates = known_hits = 0
    for key in order:
        members = groups[key]
        built = [_candidate(t, sp, v) for t, sp, v in members]
        distinct: list[int] = []
        for i, structure in enumerate(built):
            if any(matcher.fit(structure, built[j]) for j in distinct):
                duplicates += 1
            elif any(matcher.fit(structure, k) for k in known.get(key, ())):
                known_hits += 1
            else:
                distinct.append(i)
        for i in distinct:
            template, sp, _ = members[i]
            rows.append((template.position, template.item_id, sp, template.coords, built[i].lattice.matrix))
    rows.sort(key=lambda r: r[0])  # generation order: the templates' order
    ids = _ids([(tid, Composition(Counter(sp)).reduced_formula) for _, tid, sp, _, _ in rows])
    generated = len(rows)
    if not rows:
        raise ToolInputError(
            f"elements: expected a set that yields candidates, got none from {len(frame)} templates with "
            f"elements {allowed_symbols} and threshold {threshold} (templates rejected: "
            f"{dict(rejected_templates) or 'none'}; substitutions rejected: {dict(rejected) or 'none'}; "
            f"known phases {known_hits}); add elements or lower the threshold"
        )
    counts = SubstitutionCounts(
        templates=len(frame),
        templates_rejected=dict(rejected_templates),
        substitutions=n_subs,
        rejected=dict(rejected),
        duplicates=duplicates,
        known_phases=known_hits,
        generated=generated,
    )
    table = SourceTable(
        pd.DataFrame(
            {
                "id": ids,
                "species": [r[2] for r in rows],
                "coords": [r[3] for r in rows],
                "lattice": [np.asarray(r[4], dtype=np.float64).ravel() for r in rows],
            }
        ),
        {},
        "crystal",
        "substitution",
        {"substitution": counts.model_dump(), "templates": templates.source},
    )
    say(f"substitution: {generated} new candidates ({duplicates} duplicates, {known_hits} known phases)")
    return table, counts


def _spacegroup(structure: Structure) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number())
    except Exception:  # spglib fails on a degenerate cell: a key of its own
        return 0


def _candidate(template: _Template, species: list[str], volume: float) -> Structure:
    structure = build_structure(species, template.coords, template.lattice)
    structure.scale_lattice(volume)  # type: ignore[union-attr]
    return structure  # type: ignore[return-value]


def _known_phases(
    frame: pd.DataFrame, formulas: set[str], spacegroups: dict[int, int]
) -> dict[tuple[str, int], list[Structure]]:
    """The source's own structures whose reduced formula is a candidate's, by (formula, space group)."""
    known: dict[tuple[str, int], list[Structure]] = defaultdict(list)
    for pos, species in enumerate(frame["species"]):
        formula = Composition(Counter(species)).reduced_formula
        if formula not in formulas:
            continue
        structure = build_structure(species, frame["coords"].iat[pos], frame["lattice"].iat[pos])
        if pos not in spacegroups:
            spacegroups[pos] = _spacegroup(structure)  # type: ignore[arg-type]
        known[(formula, spacegroups[pos])].append(structure)  # type: ignore[arg-type]
    return known


def _ids(pairs: list[tuple[str, str]]) -> list[str]:
    """``sub-<template>-<formula>``, numbered from ``-2`` when the pair repeats."""
    seen: Counter[tuple[str, str]] = Counter()
    out = []
    for pair in pairs:
        seen[pair] += 1
        suffix = f"-{seen[pair]}" if seen[pair] > 1 else ""
        out.append(f"sub-{pair[0]}-{pair[1]}{suffix}")
    return out
