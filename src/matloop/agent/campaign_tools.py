"""Campaign-level tools the planners need besides :mod:`matloop.tools`: build a candidate pool,
gather the labels computed so far into a training slice, and report the campaign's status."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from matloop.agent.guardrails import Guardrails
from matloop.agent.state import CampaignState
from matloop.data.prototypes import Family, build_prototype_pool
from matloop.data.slices import load_slice, save_slice
from matloop.errors import ToolInputError
from matloop.workspace import Workspace


class PoolResult(BaseModel):
    slice_id: str = Field(description="Id of the unlabelled candidate pool slice.")
    count: int = Field(description="Number of candidate structures.")
    families: dict[str, int] = Field(description="Candidates per prototype family.")


class TrainingSetResult(BaseModel):
    slice_id: str = Field(
        description="Slice of all labelled items; train or fine-tune on it after featurize."
    )
    column: str = Field(description="Target column holding the labels, '<property>@<level>'.")
    count: int = Field(description="Number of labelled items.")
    unit: str = Field(description="Unit of the labels.")
    mean: float | None = Field(description="Mean label value.")
    min: float | None = Field(description="Smallest label value.")
    max: float | None = Field(description="Largest label value.")


class CampaignStatus(BaseModel):
    budget_left: dict[str, float] = Field(description="Remaining calculations, CPU-hours and LLM tokens.")
    labels: dict[str, int] = Field(description="Labels computed so far per '<property>@<level>'.")
    calculations: int = Field(description="Calculations queued so far.")
    models: list[str] = Field(description="Model ids trained in this campaign, oldest first.")


def build_candidate_pool(
    families: list[Family] | None = None,
    elements: list[str] | None = None,
    elements_none: list[str] | None = None,
    elements_all: list[str] | None = None,
    max_items: int | None = None,
    seed: int = 0,
    *,
    workspace: Workspace,
) -> PoolResult:
    """Build an unlabelled pool of small charge-balanced crystals by prototype substitution.

    Args:
        families: prototype families (perovskite, rocksalt, zincblende, wurtzite, fluorite; default all).
        elements: restrict substitutions to these element symbols.
        elements_none: leave out compounds containing any of these elements.
        elements_all: keep only compounds containing all of these elements.
        max_items: keep at most this many candidates (seeded sample).
        seed: seed of the sample.
    """
    kwargs = {"families": tuple(families)} if families else {}
    data = build_prototype_pool(**kwargs, elements=elements)
    if elements_none or elements_all:
        banned, needed = set(elements_none or []), set(elements_all or [])
        data = data.subset(
            [
                i
                for i, s in zip(data.ids, data.structures, strict=True)
                if not banned & _symbols(s) and needed <= _symbols(s)
            ]
        )
    if max_items is not None and max_items < len(data):
        keep = np.sort(np.random.default_rng(seed).choice(len(data), size=max_items, replace=False))
        data = data.subset([data.ids[k] for k in keep])
    slice_id = save_slice(workspace, data)
    counts: dict[str, int] = {}
    for item_id in data.ids:
        fam = item_id.split("-")[0]
        counts[fam] = counts.get(fam, 0) + 1
    return PoolResult(slice_id=slice_id, count=len(data), families=counts)


def _symbols(structure) -> set[str]:
    return {el.symbol for el in structure.composition.elements}


def training_set(
    slice_id: str, target: str, level: str, *, workspace: Workspace, state: CampaignState
) -> TrainingSetResult:
    """Gather every label computed in this campaign for one property and level into a new slice
    (the random audit set's labels excepted: they stay an unbiased test).

    Args:
        slice_id: the pool slice the labelled items came from.
        target: property name, e.g. 'formation_energy_per_atom'.
        level: validation level the labels were computed at, e.g. 'chgnet' (levels are never mixed).
    """
    audit = state.audit_ids()
    labels = [lb for lb in state.labels(target, level) if lb["item_id"] not in audit]
    pool = load_slice(workspace, slice_id)
    known = set(pool.ids)
    labels = [lb for lb in labels if lb["item_id"] in known]
    if not labels:
        have = list(state.store.label_counts())
        raise ToolInputError(
            f"expected a property@level with labels on slice {slice_id}, got {target}@{level}; "
            f"valid values are {have}"
        )
    column = f"{target}@{level}"
    data = pool.subset([lb["item_id"] for lb in labels])
    values = np.array([lb["value"] for lb in labels], dtype=float)
    data.properties = data.properties.assign(**{column: values})
    data.units = {**data.units, column: labels[0]["unit"]}
    data.meta = {**data.meta, "labels_of": slice_id}
    new_id = save_slice(workspace, data)
    return TrainingSetResult(
        slice_id=new_id,
        column=column,
        count=len(values),
        unit=labels[0]["unit"],
        mean=float(values.mean()),
        min=float(values.min()),
        max=float(values.max()),
    )


def campaign_status(*, state: CampaignState, guardrails: Guardrails) -> CampaignStatus:
    """Budget left, labels and models of this campaign so far."""
    return CampaignStatus(
        budget_left=guardrails.remaining(),
        labels=state.store.label_counts(),
        calculations=sum(state.store.status_counts().values()),
        models=[m["model_id"] for m in state.models()],
    )
