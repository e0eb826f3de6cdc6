from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pymatgen.analysis.structure_prediction.volume_predictor import RLSVolumePredictor
from pymatgen.core import Composition, Lattice, Species, Structure
from pymatgen.core.structure_matcher import StructureMatcher

from matloop.data.bundled import load_bundled
from matloop.data.slices import load_slice
from matloop.data.substitution import generate_substitutions, rls_volume
from matloop.data.table import SourceTable
from matloop.errors import ToolInputError
from matloop.tools.dataset import query_dataset

ELEMENTS = ["Li", "Na", "Mg", "O", "S"]


@pytest.fixture(scope="module")
def templates() -> SourceTable:
    """The first 1500 bundled Materials Project crystals."""
    return load_bundled("mp_formation_energy").head(1500)


@pytest.fixture(scope="module")
def generated(templates):
    return generate_substitutions(templates, ELEMENTS, threshold=1e-4, max_sites=8)


def test_candidates_are_charge_balanced_and_use_only_the_elements(generated):
    table, counts = generated
    assert counts.generated == len(table) > 20
    for species in table.frame["species"]:
        assert set(species) <= set(ELEMENTS)
        guesses = Composition(Counter(species)).oxi_state_guesses()
        assert guesses, f"{species} is not charge balanced"


def test_ids_name_the_template_and_formula(generated, templates):
    table, _ = generated
    known = set(templates.ids)
    for item_id, species in zip(table.frame["id"], table.frame["species"], strict=True):
        formula = Composition(Counter(species)).reduced_formula
        stem = item_id.rsplit("-", 1)[0] if item_id.rsplit("-", 1)[1].isdigit() else item_id
        assert stem.endswith(f"-{formula}")
        assert stem.removeprefix("sub-").removesuffix(f"-{formula}") in known


def test_no_candidate_is_a_template_or_a_duplicate(generated, templates):
    table, counts = generated
    matcher = StructureMatcher()
    cands = table.to_slice().structures
    by_formula: dict[str, list[Structure]] = {}
    for s in cands:
        by_formula.setdefault(s.composition.reduced_formula, []).append(s)
    for group in by_formula.values():
        assert len(matcher.group_structures(group)) == len(group)
    known = [s for s in templates.to_slice().structures if s.composition.reduced_formula in by_formula]
    for s in known:
        assert not any(matcher.fit(s, c) for c in by_formula[s.composition.reduced_formula])
    assert counts.known_phases + counts.duplicates > 0


def test_generation_is_deterministic_and_the_sample_seeded(templates, generated):
    table, _ = generated
    again, _ = generate_substitutions(templates, ELEMENTS, threshold=1e-4, max_sites=8)
    assert again.ids == table.ids
    assert np.allclose(np.stack(again.frame["lattice"]), np.stack(table.frame["lattice"]))


def test_query_dataset_generates_a_seeded_sample_with_its_counts(workspace):
    args = {
        "source": "substitution",
        "elements": ["Li", "Mg", "O", "S"],
        "max_sites": 6,
        "workspace": workspace,
    }
    first = query_dataset(**args, sample=15, seed=1)
    again = query_dataset(**args, sample=15, seed=1)
    other = query_dataset(**args, sample=15, seed=2)
    ids = [load_slice(workspace, r.slice_id).ids for r in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]
    assert again.from_cache and first.count == 15
    counts = first.generation
    assert counts is not None and counts.generated == first.source_count > 15
    assert counts.templates == 3938 and sum(counts.templates_rejected.values()) > 0
    with pytest.raises(ToolInputError, match="templates: expected a crystal source"):
        query_dataset(**{**args, "templates": "qm9"})


def test_volume_follows_pymatgen_reference_lattice_scaling():
    old = [Species("Li", 1), Species("O", -2)]
    new = [Species("Na", 1), Species("S", -2)]
    ref = Structure(Lattice.cubic(4.6), ["Li+", "Li+", "O2-"], [[0.25] * 3, [0.75] * 3, [0, 0, 0]])
    target = ref.copy()
    target.replace_species({"Li+": "Na+", "O2-": "S2-"})
    expected = RLSVolumePredictor(check_isostructural=False, use_bv=False).predict(target, ref)
    assert rls_volume(ref.volume, old, new, [2, 1]) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"elements": ["Li", "Xx"]}, "elements: expected element symbols"),
        ({"elements": ["Li", "O"], "threshold": 0.0}, "threshold: expected a probability in (0, 1], got 0.0"),
        ({"elements": ["Li", "O"], "threshold": 1.5}, "threshold: expected a probability in (0, 1]"),
        ({"elements": []}, "elements: expected a list of element symbols"),
        ({"elements": ["He", "Ne"]}, "elements: expected a set that yields candidates, got none"),
    ],
)
def test_bad_input_gets_one_clear_line(templates, kwargs, message):
    with pytest.raises(ToolInputError) as err:
        generate_substitutions(templates.head(50), **kwargs)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
