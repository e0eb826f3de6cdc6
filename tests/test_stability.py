from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition

from matloop.data.bundled import load_bundled
from matloop.errors import ToolInputError
from matloop.stability import Hull, Phase


@pytest.fixture(scope="module")
def mg_si_o() -> list[Phase]:
    """The bundled Materials Project phases of the Mg-Si-O system (PBE formation energies)."""
    table = load_bundled("mp_formation_energy")
    system = {"Mg", "Si", "O"}
    phases = []
    for item_id, species, fe in zip(
        table.frame["id"], table.frame["species"], table.frame["formation_energy_per_atom"], strict=True
    ):
        if set(species) <= system and len(set(species)) > 1:
            phases.append(Phase(item_id, Composition(Counter(species)).formula, float(fe), reference=True))
    assert len(phases) > 10
    return phases


def test_hull_distance_matches_pymatgen_phase_diagram(mg_si_o):
    hull = Hull("mp", references=mg_si_o)
    entries = [PDEntry(Composition(el), 0.0) for el in ("Mg", "Si", "O")]
    entries += [
        PDEntry(p.composition, p.formation_energy_per_atom * p.composition.num_atoms) for p in mg_si_o
    ]
    pd = PhaseDiagram(entries)
    expected = [pd.get_e_above_hull(e) for e in entries[3:]]
    got = [s.e_above_hull for s in hull.stability(mg_si_o)]
    assert np.allclose(got, expected, atol=1e-6)
    # many compositions at once, against pymatgen's hull energies
    formulas = ["MgO", "SiO2", "Mg2SiO4", "MgSiO3", "Mg3Si2O7", "Mg2Si", "MgSi2O5", "Mg5SiO7"]
    expected_hull = [pd.get_hull_energy_per_atom(Composition(f)) for f in formulas]
    assert np.allclose(hull.energy(formulas), expected_hull, atol=1e-9)


def test_a_new_stable_candidate_lowers_the_hull_and_re_scores_an_earlier_hit(mg_si_o):
    refs = Hull("chgnet", references=mg_si_o)
    hull_at = float(refs.energy(["Mg4SiO6"])[0])
    first = Phase("cand-1", "Mg4SiO6", hull_at - 0.010)
    after_first = refs.with_candidates([first], "chgnet")
    (score,) = after_first.stability()
    assert score.stable and score.e_above_hull == 0.0
    assert score.e_above_references == pytest.approx(-0.010)
    # a lower phase at a nearby composition moves the hull above Li3FeO4
    second = Phase("cand-2", "Mg7Si2O11", float(after_first.energy(["Mg7Si2O11"])[0]) - 0.200)
    after_second = after_first.with_candidates([second], "chgnet")
    rescored = {s.item_id: s for s in after_second.stability()}
    assert rescored["cand-2"].stable
    assert not rescored["cand-1"].stable and rescored["cand-1"].e_above_hull > 0.0
    assert rescored["cand-1"].e_above_references == pytest.approx(-0.010)
    assert "cand-2" in rescored["cand-1"].decomposition
    assert sum(rescored["cand-1"].decomposition.values()) == pytest.approx(1.0)


def test_levels_are_never_mixed_and_completeness_is_counted(mg_si_o):
    hull = Hull("chgnet", references=mg_si_o)
    with pytest.raises(ToolInputError, match="level: expected 'chgnet'"):
        hull.with_candidates([Phase("x", "MgSiO3", -1.0)], "sevenn")
    assert hull.completeness(["Mg", "Si", "O"]) == len(mg_si_o)
    assert hull.completeness(["Mg", "Na"]) == 0


def test_predictions_compete_on_the_hull_they_make_together(mg_si_o):
    """Candidates predicted below the known hull: of two polymorphs only the lower one is on the
    hull they make (≤ 0: its depth below the known hull); a much lower neighbouring phase then
    covers both (> 0), though against the known hull alone every one looks stable."""
    hull = Hull("chgnet", references=mg_si_o)
    at = float(hull.energy(["Mg4SiO6"])[0])
    low, high = Phase("poly-low", "Mg4SiO6", at - 0.050), Phase("poly-high", "Mg4SiO6", at - 0.020)
    assert np.allclose(hull.predicted_distance([low, high]), [-0.050, 0.030])
    neighbour = Phase("neighbour", "Mg7Si2O11", float(hull.energy(["Mg7Si2O11"])[0]) - 0.300)
    covered = float(hull.with_candidates([neighbour], "chgnet").energy(["Mg4SiO6"])[0])
    assert covered < at - 0.050
    distance = hull.predicted_distance([low, high, neighbour])
    assert np.allclose(distance, [at - 0.050 - covered, at - 0.020 - covered, -0.300])
    energies = [p.formation_energy_per_atom for p in (low, high, neighbour)]
    assert (hull.distance(["Mg4SiO6", "Mg4SiO6", "Mg7Si2O11"], energies) < 0).all()
