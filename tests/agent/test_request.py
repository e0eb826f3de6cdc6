"""Reading common request shapes in plain words."""

from __future__ import annotations

import pytest

from matloop.agent.request import parse_request

CASES = [
    (
        "Find perovskites with a band gap between 1.5 and 2.5 eV",
        {"target": "band_gap", "goal": "window", "window": (1.5, 2.5), "dataset": "prototypes"},
    ),
    (
        "learn the formation energy of oxides without lead, budget 30 calculations",
        {
            "target": "formation_energy_per_atom",
            "goal": "learn",
            "elements_include": ["O"],
            "elements_exclude": ["Pb"],
            "budget": 30,
        },
    ),
    (
        "minimise the formation energy of compounds containing Ti and O",
        {"target": "formation_energy_per_atom", "goal": "minimize", "elements_include": ["O", "Ti"]},
    ),
    (
        "find materials with bulk modulus above 200 GPa",
        {"target": "K_VRH", "goal": "window", "window": (200.0, None), "dataset": "mp_elastic"},
    ),
    (
        "molecules with HOMO-LUMO gap below 5 eV from qm9",
        {"target": "gap", "goal": "window", "window": (None, 5.0), "dataset": "qm9"},
    ),
    (
        "maximize the refractive index, exclude Cd and Hg",
        {"target": "n", "goal": "maximize", "elements_exclude": ["Cd", "Hg"]},
    ),
    (
        "Which compounds have formation energy < -1 eV/atom? use at most 20 DFT calculations",
        {"target": "formation_energy_per_atom", "window": (None, -1.0), "budget": 20, "level": "cp2k"},
    ),
    ("LUMO between -2 and -1 eV", {"target": "lumo", "goal": "window", "window": (-2.0, -1.0)}),
    ("band gap around 2 eV with cp2k", {"target": "band_gap", "window": (1.75, 2.25), "level": "cp2k"}),
    (
        "lead-free perovskites with the lowest formation energy",
        {"target": "formation_energy_per_atom", "goal": "minimize", "elements_exclude": ["Pb"]},
    ),
    (
        "predict the shear modulus of nitrides, no beryllium",
        {"target": "G_VRH", "goal": "learn", "elements_include": ["N"], "elements_exclude": ["Be"]},
    ),
    (
        "formation energy from -2 to -0.5 eV/atom with chgnet, 15 calculations, avoiding Cd",
        {"window": (-2.0, -0.5), "level": "chgnet", "budget": 15, "elements_exclude": ["Cd"]},
    ),
    ("train a model of the HOMO on QM9 molecules", {"target": "homo", "goal": "learn", "dataset": "qm9"}),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_request_shapes(text, expected):
    req = parse_request(text)
    for key, value in expected.items():
        assert getattr(req, key) == value, (key, req)
    assert not req.missing


def test_unparseable_request_says_what_it_understood_and_what_it_needs():
    req = parse_request("make me something nice without mercury")
    assert req.elements_exclude == ["Hg"]
    assert req.missing and "target property" in req.missing[0]
    assert "without Hg" in req.understood()


def test_ask_without_a_model_answers_from_a_dataset_with_numbers_and_ids(settings, tmp_path):
    from matloop.agent.ask import ask
    from matloop.data.slices import load_slice
    from matloop.workspace import Workspace

    result = ask(
        "find materials with a band gap between 1 and 2 eV, excluding oxygen",
        workspace=tmp_path / "ws",
        planner="rules",
    )
    assert result.planner == "rules" and len(result.ids) == 1 and result.ids[0] in result.answer
    data = load_slice(Workspace(tmp_path / "ws"), result.ids[0])
    assert f"{len(data)} items in mp_dielectric" in result.answer
    gaps = data.target("band_gap")
    assert ((gaps >= 1) & (gaps <= 2)).all()
    assert not any("O" in {e.symbol for e in s.composition.elements} for s in data.structures)


def test_ask_without_a_model_says_what_it_needs():
    from matloop.agent.ask import ask

    result = ask("make something nice", planner="rules", workspace="unused")
    assert result.answer.startswith("I understood: nothing I can act on. I need: a target property")
    assert result.steps == 0
