"""A cheap validation level's stored results as inputs of the surrogate of an expensive one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matloop.data.feature_sets import GraphSet
from matloop.data.items import Items
from matloop.errors import ToolInputError
from matloop.validation.levels import get_level
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace


def with_level_values(items: Items, ids: Sequence[str], workspace: Workspace, level: str | None) -> Items:
    """``items`` (the items ``ids``) with every property computed at ``level`` as columns
    ``<property>@<level>`` (NaN where an item has none); unchanged when ``level`` is None."""
    if level is None:
        return items
    get_level(level)
    properties, values = ValidationStore(workspace).level_table(level, list(ids))
    if not properties:
        raise ToolInputError(
            f"expected results of level {level!r} in this workspace (queue_validation at level {level!r} "
            "for the pool first), got none"
        )
    return items.with_level_values([f"{p}@{level}" for p in properties], values)


def model_items(graphs: GraphSet, workspace: Workspace, meta: dict[str, Any]) -> Items:
    """The items of a feature set as the model with ``meta`` reads them (with the values of the
    cheap level it was trained with)."""
    return with_level_values(graphs.items(workspace), graphs.ids, workspace, meta.get("cheap_level"))
