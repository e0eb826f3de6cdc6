"""Reading requests as scientists write them: every constraint used, reported back or asked about."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tests.agent.request_eval import compare, load

from matloop.agent.request import parse_request
from matloop.agent.spec import CampaignSpec, hard_limits

DEV = load(Path(__file__).with_name("requests_dev.yaml"))


@pytest.mark.parametrize("case", DEV, ids=[c["text"][:60] for c in DEV])
def test_request_set_parses_as_meant(case):
    diffs, dropped = compare(case["text"], case["expect"])
    assert not diffs, diffs
    assert not dropped


def test_the_request_set_is_large_and_varied():
    assert len(DEV) >= 60
    assert sum(bool(c["expect"].get("elements_exclude")) for c in DEV) >= 20
    assert sum(c["expect"].get("budget") is not None for c in DEV) >= 15


def test_unparseable_request_says_what_it_understood_and_what_it_needs():
    req = parse_request("make me something nice without mercury")
    assert req.elements_exclude == ["Hg"]
    assert req.needs and "target property" in req.needs[0]
    assert "without Hg" in req.understood()


def test_numbers_and_words_it_does_not_use_are_reported_back():
    req = parse_request("shear modulus at 300 K, then confirm the best 5 with DFT")
    assert any("300 K" in n for n in req.notes)
    assert any("best 5" in n for n in req.notes)
    assert req.elements_include == [] and req.needs == []  # the K of kelvin is not potassium


def test_an_element_neither_wanted_nor_unwanted_blocks_with_the_rephrasing():
    req = parse_request("band gap between 1 and 2 eV, Pb")
    assert req.elements_exclude == [] and req.elements_include == []
    assert req.needs == [
        "whether Pb is wanted or unwanted ('1 and 2 eV, Pb'): say 'containing Pb' or 'without Pb'"
    ]


@pytest.mark.parametrize(
    ("text", "budget", "level"),
    [
        (
            "queue 500 calculations of the formation energy with vasp, at most 5 calculations with chgnet",
            5,
            "chgnet",
        ),
        ("formation energy, 5 calculations; later we will queue 500 calculations", 5, None),
        ("formation energy: no vasp, 8 calcs", 8, None),
    ],
)
def test_conflicting_limits_give_the_most_restrictive_one_with_a_note(text, budget, level):
    req = parse_request(text)
    assert (req.budget, req.level) == (budget, level)
    assert req.notes  # the conflict or the ruled-out level is reported


def test_limits_in_words_become_the_campaigns_guardrails():
    spec = CampaignSpec(
        request="minimise the energy above hull of Li-containing sulfides, no Pb or Tl, at most 7 calcs",
        budget={"calculations": 40},
        elements={"forbidden": ["Hg"]},
    )
    budget, elements = hard_limits(spec)
    assert budget.calculations == 7
    assert elements.forbidden == ["Hg", "Pb", "Tl"] and elements.required == ["Li", "S"]


def test_a_request_for_stable_crystals_is_a_substitution_campaign_on_the_hull(settings):
    """Words → goal 'stable' on candidates substituted into the named elements, every limit kept;
    its dry run generates the pool and counts the hull's reference phases."""
    from matloop.agent.ask import spec_from_request
    from matloop.agent.campaign import plan_spec
    from matloop.agent.llm import campaign_goal

    text = "new stable Ca-Ti-O crystals within 25 meV/atom of the hull, no Al, at most 30 CHGNet calculations"
    req = parse_request(text)
    assert not req.needs and req.notes == [
        "stable crystals of the chemical space Ca-O-Ti: the candidates and the reference phases of the "
        "hull are made only of these elements"
    ]
    spec = spec_from_request(req, text)
    assert (spec.target.property, spec.target.goal, spec.target.window) == (
        "formation_energy_per_atom",
        "stable",
        (None, 0.025),
    )
    assert (spec.pool.source, spec.pool.elements) == ("substitution", ["Ca", "O", "Ti"])
    assert spec.elements.allowed == ["Ca", "O", "Ti"] and spec.elements.forbidden == ["Al"]
    assert hard_limits(spec)[1].required == []  # the words read again: the space, not each element
    assert (spec.level, spec.budget.calculations) == ("chgnet", 30)
    plan = plan_spec(spec, settings=settings)
    assert 0 < plan.pool <= 150 and plan.references is not None and plan.references.count > 0
    assert plan.elements == ["Ca", "O", "Ti"] and plan.fits

    unworded = SimpleNamespace(spec=spec.model_copy(update={"request": None}))  # the goal the LLM reads
    assert (
        "stable crystals: distance to the convex hull of formation_energy_per_atom@chgnet in (None, 0.025)"
        in (
            campaign_goal(unworded)  # type: ignore[arg-type]
        )
    )


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
    assert result.steps == 0 and result.needs


def test_ask_with_an_unclear_element_runs_nothing_and_a_refused_confirmation_neither(tmp_path):
    from matloop.agent.ask import ask

    unclear = ask("band gap between 1 and 2 eV, Pb", planner="rules", workspace=tmp_path / "a")
    assert unclear.steps == 0 and "'without Pb'" in unclear.needs[0]
    seen = []
    refused = ask(
        "lead-free perovskites with the lowest formation energy, 4 calculations",
        planner="rules",
        workspace=tmp_path / "b",
        confirm=lambda req, spec: seen.append(spec) or False,
    )
    assert refused.answer.startswith("Not run") and refused.steps == 0
    assert seen[0].elements.forbidden == ["Pb"] and seen[0].budget.calculations == 4
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_language_model_plans_inside_the_limits_the_words_state(settings, tmp_path):
    """The parsed limits reach the model's prompt, and a query that ignores them is amended."""
    from langchain_core.messages import AIMessage
    from tests.agent.conftest import ScriptedChatModel, call, tool_messages

    from matloop.agent.ask import ask
    from matloop.data.slices import load_slice
    from matloop.workspace import Workspace

    prompts = []

    def script(messages):
        prompts.append(str(messages[0].content))
        if not tool_messages(messages):  # a query without the element limits the request states
            return call("query_dataset", {"source": "mp_dielectric", "properties": ["band_gap"]})
        return AIMessage(content="done")

    result = ask(
        "band gaps of Li-containing compounds, no lead or thallium",
        workspace=tmp_path / "ws",
        model=ScriptedChatModel(script=script),
    )
    assert (
        "forbidden elements ['Pb', 'Tl']" in prompts[0]
        and "required elements (in every item) ['Li']" in prompts[0]
    )
    data = load_slice(Workspace(tmp_path / "ws"), result.ids[0])
    compositions = [{e.symbol for e in s.composition.elements} for s in data.structures]
    assert compositions and all("Li" in c and not {"Pb", "Tl"} & c for c in compositions)


def test_required_elements_hold_for_pools_and_calculations_whatever_a_planner_asks(settings, tmp_path):
    from matloop.agent.campaign import Campaign
    from matloop.agent.campaign_tools import build_candidate_pool
    from matloop.data.slices import load_slice

    spec = CampaignSpec(
        request="formation energy of Li-containing rock-salt compounds, no Pb, 5 calculations"
    )
    campaign = Campaign(tmp_path / "c", spec)
    guarded = campaign.toolbox.call("build_candidate_pool", {"families": ["rocksalt"]}).result
    ids = load_slice(campaign.ws, guarded.slice_id).ids
    assert ids and all("Li" in i for i in ids)
    pool = build_candidate_pool(families=["rocksalt"], workspace=campaign.ws)  # unguarded
    everything = load_slice(campaign.ws, pool.slice_id).ids
    other = [i for i in everything if "Li" not in i][:2]
    args, verdicts = campaign.guardrails.check(
        campaign.toolbox.specs["queue_validation"],
        {"slice_id": pool.slice_id, "item_ids": [*other, ids[0]], "level": "chgnet"},
    )
    assert args["item_ids"] == [ids[0]]
    assert any("required elements ['Li'] missing" in v.message for v in verdicts)


@pytest.mark.parametrize(
    "text", ["", "1e999 calculations of formation energy", "band gap [2, 1] eV", "formation energy, no PbI2"]
)
def test_odd_requests_are_asked_about_never_guessed(text):
    assert parse_request(text).needs


def test_a_campaign_whose_request_is_unclear_does_not_start(settings, tmp_path):
    from matloop.agent.campaign import Campaign
    from matloop.errors import ToolInputError

    with pytest.raises(ToolInputError, match="say 'containing Pb' or 'without Pb'"):
        Campaign(tmp_path / "c", CampaignSpec(request="learn the formation energy, Pb"))
    assert not (tmp_path / "c" / "state.sqlite").exists()
