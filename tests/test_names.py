"""Each list of names is written once (:mod:`matloop.names`) and the registries that implement
the choices are keyed by exactly those names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from matloop.acquisition import check_strategy
from matloop.agent.request import DATASETS, parse_request
from matloop.agent.spec import DEFAULT_STRATEGIES, CampaignSpec
from matloop.data.sources import source_names
from matloop.errors import ToolInputError
from matloop.models.uq import METHODS
from matloop.names import (
    EXECUTOR_NAMES,
    FINISHED_STATUSES,
    GOALS,
    JOB_STATUSES,
    LEVEL_NAMES,
    SOURCE_NAMES,
    STRATEGIES,
    TAKEN_STATUSES,
    UQ_METHODS,
)
from matloop.validation.executors import get_executor
from matloop.validation.levels import APPROVAL_COST, LEVELS


def test_registries_are_keyed_by_the_names() -> None:
    assert tuple(LEVELS) == LEVEL_NAMES
    assert set(METHODS) == set(UQ_METHODS)
    assert set(source_names()) == set(SOURCE_NAMES)
    assert set(DEFAULT_STRATEGIES) == set(GOALS)
    assert set(DATASETS) <= set(SOURCE_NAMES)
    for name in STRATEGIES:
        assert check_strategy(name) == name
    for name in EXECUTOR_NAMES[:2]:  # local and dask start nothing when made
        assert get_executor(name) is not None
    with pytest.raises(ToolInputError, match="valid values"):
        get_executor("ssh")
    assert set(JOB_STATUSES) >= FINISHED_STATUSES and set(JOB_STATUSES) >= TAKEN_STATUSES


@pytest.mark.parametrize(("given", "stored"), [("minimise", "minimize"), ("maximize", "maximize")])
def test_a_goal_has_one_spelling_and_british_input_is_accepted(given: str, stored: str) -> None:
    spec = CampaignSpec.model_validate({"target": {"goal": given}})
    assert spec.target.goal == stored
    assert f"goal: {stored}" in spec.to_yaml()
    assert parse_request(f"{given} the band gap").goal == stored


def test_an_unknown_goal_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError, match="'learn', 'window', 'minimize', 'maximize' or 'stable'"):
        CampaignSpec.model_validate({"target": {"goal": "optimise"}})


def test_approval_follows_the_level_cost() -> None:
    needing = {name for name, level in LEVELS.items() if level.needs_approval}
    assert needing == {name for name, level in LEVELS.items() if level.cost > APPROVAL_COST}
    assert needing == {"cp2k", "vasp"}
