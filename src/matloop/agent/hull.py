"""The convex hull of a campaign whose goal is ``stable``: its reference phases and its labelled
candidates, all at the campaign's level (:mod:`matloop.stability`).

Reference phases are the known phases of the pool's chemical systems (``target.references``, a
``query_dataset`` query, by default the bundled Materials Project structures made of the pool's
elements): real calculations at the campaign's level, queued like any other and charged to the
budget. Every formation energy labelled at the level in the workspace is a point of the hull; the
items outside the pool are the references.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matloop.data.slices import load_slice
from matloop.stability import Hull, Phase, Stability
from matloop.validation.store import ValidationStore

if TYPE_CHECKING:
    from matloop.agent.session import Session

#: The memoised step that builds the pool (rules planner); its result names the pool's slice.
POOL_STEP = "setup:pool"


def pool_slice_id(campaign: Session) -> str | None:
    """The slice of the campaign's candidate pool (None before it is built)."""
    if campaign.spec.pool.slice_id is not None:
        return campaign.spec.pool.slice_id
    step = campaign.state.step(POOL_STEP)
    return None if step is None else step["result"]["slice_id"]


def pool_elements(campaign: Session) -> list[str]:
    """The elements of the pool's items (the chemical systems whose reference phases count)."""
    slice_id = pool_slice_id(campaign)
    if slice_id is None:
        return []
    data = load_slice(campaign.ws, slice_id)
    return sorted({el.symbol for s in data.structures for el in s.composition.elements})


def campaign_hull(campaign: Session) -> tuple[Hull, list[Stability]]:
    """The hull at the campaign's level now, and every labelled pool item scored against it."""
    level = campaign.spec.level
    slice_id = pool_slice_id(campaign)
    pool = set(load_slice(campaign.ws, slice_id).ids) if slice_id is not None else set()
    points: dict[str, tuple[str, float]] = {}
    for item_id, formula, energy in ValidationStore(campaign.ws).formation_energies(level):
        points[item_id] = (formula, energy)
    refs = [Phase(i, f, e, reference=True) for i, (f, e) in points.items() if i not in pool]
    cands = [Phase(i, f, e) for i, (f, e) in points.items() if i in pool]
    hull = Hull(level, refs, cands)
    return hull, hull.stability()


def hits(campaign: Session, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``labels`` of pool items whose distance to the current hull lies in the target window."""
    from matloop.audit_stats import in_window

    window = campaign.spec.target.window or (None, 0.0)
    _, scores = campaign_hull(campaign)
    inside = {s.item_id for s in scores if in_window(s.e_above_hull, window)}
    return [lb for lb in labels if lb["item_id"] in inside]
