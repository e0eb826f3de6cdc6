"""What a campaign will spend before it spends anything: the pool, its screening level over the
whole pool, the reference phases of the convex hull (goal ``stable``), the random audit set, and
what is left of the calculation budget for labels.

The numbers are the ledger's own (:mod:`matloop.agent.registry`): a queued calculation costs its
level's ``charge`` whether it runs or is served from the calculation cache; the audit set reserves
one calculation per item. :func:`plan_campaign` builds the pool (the campaign's memoised pool step,
so a run does not build it twice) and queries the reference phases, and computes nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from matloop.agent.hull import pool_elements
from matloop.data.references import bundled_references
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.stability import HULL_PROPERTY
from matloop.validation.calc_cache import CalculationCache
from matloop.validation.levels import get_level

if TYPE_CHECKING:
    from matloop.agent.audit_set import AuditedSession
    from matloop.data.slices import DatasetSlice


class Calculations(BaseModel):
    """Calculations of one kind a campaign queues before its own labels."""

    level: str = Field(description="The level that computes them.")
    count: int = Field(description="Structures to compute.")
    cached: int = Field(
        description="Of them, held by the cross-workspace calculation cache (served at once)."
    )
    cost: float = Field(description="Budget charge in calculations (cached ones are charged alike).")

    @classmethod
    def of(cls, cache_dir: Path, level: str, data: DatasetSlice) -> Calculations:
        """The calculations of every structure of ``data`` at ``level``."""
        lv = get_level(level)
        cached = 0
        if lv.package is not None and len(data):
            cache = CalculationCache(cache_dir, lv)
            try:
                cached = cache.held(data.structures)
            finally:
                cache.close()
        return cls(level=level, count=len(data), cached=cached, cost=len(data) * lv.charge)

    def text(self, what: str) -> str:
        return f"{self.count} {what} at {self.level} ({self.cached} cached): {self.cost:g} calculations"


class CampaignPlan(BaseModel):
    """A campaign's spending before its first label, and what the budget leaves for labels."""

    pool: int = Field(description="Candidates in the pool.")
    budget: int = Field(description="The campaign's calculation budget.")
    level: str = Field(description="The campaign's level (labels).")
    charge: float = Field(description="Calculations charged per label at the campaign's level.")
    screening: Calculations | None = Field(None, description="The screening level over the whole pool.")
    references: Calculations | None = Field(None, description="Goal 'stable': known phases of the hull.")
    elements: list[str] = Field(
        default_factory=list,
        description="Goal 'stable', formation energies: the elements whose energies the hull starts from.",
    )
    elements_shipped: int = Field(0, description="Of them, elemental energies shipped at the level.")
    audit: int = Field(description="Random audit items (one calculation each, reserved at the start).")
    seed_size: int = Field(description="Labels of the seed set.")
    batch_size: int = Field(description="Labels of one selected batch.")

    @property
    def before_labels(self) -> float:
        """Calculations charged for screening and reference phases."""
        return sum(c.cost for c in (self.screening, self.references) if c is not None)

    @property
    def left_for_labels(self) -> float:
        """Calculations left for labels after screening and reference phases."""
        return self.budget - self.before_labels

    @property
    def needed(self) -> float:
        """Calculations the labels need at least: the audit set, the seed set and one batch."""
        return self.audit + (self.seed_size + self.batch_size) * self.charge

    @property
    def fits(self) -> bool:
        """Whether screening and reference phases leave the labels what they need; spending of less
        than one label before them never refuses a campaign (a budget too small for a first round
        by itself is the guardrails' to trim, as ever)."""
        return self.before_labels < self.charge or self.left_for_labels + 1e-9 >= self.needed

    def lines(self) -> list[str]:
        """The plan in words, one fact a line."""
        out = [f"pool: {self.pool} candidates"]
        if self.screening is not None:
            out.append("screening: " + self.screening.text("single points"))
        if self.references is not None:
            out.append("reference phases: " + self.references.text("known phases"))
        if self.elements:
            rest = len(self.elements) - self.elements_shipped
            computed = f", {rest} computed within the first labels (not charged)" if rest else ""
            out.append(
                f"elements: {len(self.elements)} ({', '.join(self.elements)}), "
                f"{self.elements_shipped} shipped at {self.level}{computed}"
            )
        out.append(
            f"labels: {self.left_for_labels:g} of {self.budget} calculations left; at least {self.needed:g} "
            f"needed (audit {self.audit} + seed {self.seed_size} + one batch {self.batch_size}"
            f" at {self.charge:g} each)"
        )
        return out

    def refusal(self) -> str:
        """One line: why the budget cannot pay for this pool."""
        parts = [
            f"{c.count} {what} at {c.level}: {c.cost:g}"
            for c, what in (
                (self.screening, "screening single points"),
                (self.references, "reference phases"),
            )
            if c is not None
        ]
        parts.append(
            f"audit {self.audit} + seed {self.seed_size} + one batch {self.batch_size}: {self.needed:g}"
        )
        least = self.before_labels + self.needed
        return (
            f"budget.calculations: expected at least {least:g} for a pool of {self.pool} "
            f"({'; '.join(parts)}), got {self.budget}, which leaves "
            f"{self.left_for_labels:g} for labels; raise the budget or shrink the pool (pool.max_items)"
        )


def plan_campaign(campaign: AuditedSession) -> CampaignPlan:
    """The plan of ``campaign``: its pool is built (a memoised step) and its reference phases
    queried; nothing is calculated."""
    from matloop.agent.rules import RulesPlanner

    spec, rules = campaign.spec, RulesPlanner()
    pool_id = rules.pool(campaign)
    pool = load_slice(campaign.ws, pool_id)
    cache_dir = Path(campaign.ws.settings.cache_dir)
    screening_level = rules.cheap_level(campaign, pool.kind)
    screening = Calculations.of(cache_dir, screening_level, pool) if screening_level else None
    references, elements = None, []
    if spec.target.goal == "stable":
        if HULL_PROPERTY in get_level(spec.level).properties:  # formation energies: elemental references
            elements = pool_elements(campaign)
        slice_id = rules.reference_phases(campaign)
        if slice_id is not None:
            references = Calculations.of(cache_dir, spec.level, load_slice(campaign.ws, slice_id))
    shipped = set(bundled_references(spec.level)) & set(elements)
    return CampaignPlan(
        pool=len(pool),
        budget=int(campaign.guardrails.budget.calculations),
        level=spec.level,
        charge=get_level(spec.level).charge,
        screening=screening,
        references=references,
        elements=elements,
        elements_shipped=len(shipped),
        audit=campaign.audit.size(len(campaign.audit.eligible(pool_id))) if spec.audit.enabled else 0,
        seed_size=spec.seed_size,
        batch_size=spec.batch_size,
    )


def check_budget(campaign: AuditedSession) -> CampaignPlan:
    """The campaign's plan, noted in its decision log; a pool whose screening and reference phases
    cost at least one label and leave less than the audit, the seed set and one batch for labels
    is refused (:class:`~matloop.errors.ToolInputError`)."""
    plan = plan_campaign(campaign)
    campaign.note("plan: " + "; ".join(plan.lines()), plan=plan.model_dump(mode="json"))
    if not plan.fits:
        raise ToolInputError(plan.refusal())
    return plan
