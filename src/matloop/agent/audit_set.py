"""A campaign's random audit set: drawn, reserved, computed and read, whatever the planner.

At the start of a campaign (:meth:`Audit.start`) a share of the calculation budget is reserved
(one keyed ledger row) and that many items are drawn uniformly, reproducibly from the campaign
seed, from the candidate pool after the same element, sanity and duplicate filters as candidates
get. The draw is stored in the campaign state, so a resumed campaign has the same audit. The
items are released round by round (:meth:`Audit.on_round`, called when the campaign's round
advances, by either planner): each round's batch is queued through the toolbox (guardrails,
decision log, budget) and collected at the next round boundary, and whatever is left is computed
when the planner stops (:meth:`Audit.finish`). Until released, the guardrails drop audit items
from any planner's calculation; audit labels never enter a training set (``training_set``).

:meth:`Audit.summary` reads it back: every round's model on the audit items, calibration, and
found-vs-random for discovery goals (statistics in :mod:`matloop.audit_stats`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from matloop.agent.hull import campaign_hull
from matloop.agent.session import Session
from matloop.audit_stats import (
    BestVsRandom,
    Enrichment,
    ErrorMetrics,
    Informativeness,
    audit_schedule,
    audit_size,
    best_vs_random,
    calibration_curve,
    draw_audit,
    enrichment,
    error_metrics,
    in_window,
    informativeness,
)
from matloop.data.graphs import structure_hashes
from matloop.data.slices import load_slice
from matloop.errors import CampaignStop
from matloop.names import DIRECTIONS
from matloop.validation.sanity import check_structures, site_elements

if TYPE_CHECKING:
    from matloop.agent.decisions import DecisionLog


#: How a number that cannot be estimated yet is reported, followed by what it needs.
NOT_YET = "not enough data yet: needs"


class RoundAudit(BaseModel):
    """One round's model on the audit items."""

    round: int = Field(description="Round the model was trained in.")
    model_id: str = Field(description="The model.")
    labels: int = Field(description="Campaign labels (audit items excluded) available to train it.")
    metrics: ErrorMetrics = Field(description="Accuracy and calibration on the audit items.")


class AuditSummary(BaseModel):
    """Everything the audit set says about a campaign so far."""

    enabled: bool = Field(description="Whether the campaign has an audit set.")
    size: int = Field(0, description="Audit items drawn.")
    labelled: int = Field(0, description="Audit items with a label.")
    eligible: int = Field(0, description="Pool items the audit was drawn from (after the filters).")
    schedule: list[int] = Field(default_factory=list, description="Audit items per round 0, 1, ...")
    rounds: list[RoundAudit] = Field(default_factory=list, description="Every round's model on the audit.")
    calibration: list[tuple[float, float]] = Field(
        default_factory=list, description="Final model: (nominal, observed) coverage of central intervals."
    )
    enrichment: Enrichment | None = Field(None, description="Hits found vs random (goals with a window).")
    best: BestVsRandom | None = Field(None, description="Best value vs random (minimize/maximize goals).")
    informativeness: Informativeness | None = Field(
        None, description="Learning goals: error of the picks vs error of random picks, same models."
    )
    retrained_with_audit: bool = Field(
        False, description="Whether the final model was retrained with the audit items (never)."
    )

    def headline(self, unit: str = "") -> list[tuple[str, str]]:
        """The numbers a reader needs first, as (name, value) rows."""
        if not self.enabled:
            return [("audit set", "off (no unbiased test of this campaign)")]
        rows = [("audit set", f"{self.labelled} of {self.size} items labelled (drawn from {self.eligible})")]
        if not self.rounds:
            rows.append(("audit MAE", f"{NOT_YET} a model from round 1 on and 2 labelled audit items"))
        else:
            last = self.rounds[-1]
            m = last.metrics
            rows += [
                (f"audit MAE, round-{last.round} model", f"{m.mae.text()} {unit}".strip()),
                ("audit RMSE", f"{m.rmse.text()} {unit}".strip()),
                ("coverage of 68 % / 95 % intervals", f"{m.coverage_68.text(2)} / {m.coverage_95.text(2)}"),
                ("Spearman(|error|, σ)", "n/a" if m.spearman is None else f"{m.spearman:.2f}"),
            ]
            if len(self.rounds) > 1:
                first = self.rounds[0].metrics.mae
                rows.append(("audit MAE, first → last model", f"{first.text()} → {m.mae.text()}"))
        if (e := self.enrichment) is not None and not e.audit_n:
            rows.append(("found vs random", f"{NOT_YET} labelled audit items"))
        elif e is not None:
            rows += [
                ("hits found", f"{e.found} in {e.n} campaign calculations"),
                ("pool hit rate (audit)", f"{e.audit_hits}/{e.audit_n} = {e.hit_rate.text(2)}"),
                ("hits expected from random", e.expected_random.text(2)),
                ("enhancement over random", "n/a" if e.factor is None else e.factor.text(2)),
                ("P(random finds as many)", f"{e.p_random_as_good:.2g}"),
                ("verdict", e.note),
            ]
        if (i := self.informativeness) is not None and not i.picks:
            rows.append(("error of the picks vs random", f"{NOT_YET} labels of items a model picked"))
        elif i is not None:
            rows += [
                (
                    "error of the picks (when picked)",
                    f"{i.picks_mae:.3g} {unit} over {i.picks} picks".strip(),
                ),
                ("error random picks would have had", f"{i.random_mae.text()} {unit}".strip()),
                ("picks' error ÷ random's", i.ratio.text(2)),
                ("verdict", i.note),
            ]
        if (b := self.best) is not None and not b.audit_n:
            rows.append(("best vs random", f"{NOT_YET} labelled audit items"))
        elif b is not None:
            rows += [
                ("best found", f"{b.best:.4g} {unit} in {b.n} campaign calculations".strip()),
                ("pool share as good (audit)", f"{b.audit_as_good}/{b.audit_n} = {b.share_as_good.text(2)}"),
                ("P(random reaches it)", b.p_random_as_good.text(2)),
                ("verdict", b.note),
            ]
        return rows


class Audit:
    """The audit set of one campaign."""

    def __init__(self, campaign: Session) -> None:
        self.campaign = campaign
        self.live = False  # set by start(): round changes then release audit batches
        self._eligible: dict[str, list[str]] = {}  # pool slice → eligible ids (the plan's, then the draw's)

    # -- the stored draw --------------------------------------------------------------------
    @property
    def plan(self) -> dict[str, Any] | None:
        return self.campaign.state.audit_plan()

    def ids(self) -> list[str]:
        plan = self.plan
        return list(plan["ids"]) if plan else []

    def batches(self) -> list[list[str]]:
        """Audit items per round 0, 1, …"""
        plan = self.plan
        if not plan:
            return []
        ends = np.cumsum([0, *plan["schedule"]])
        return [plan["ids"][ends[r] : ends[r + 1]] for r in range(len(plan["schedule"]))]

    def reserved(self) -> set[str]:
        """Audit items not yet released: no planner may calculate them."""
        state = self.campaign.state
        return {
            i
            for r, batch in enumerate(self.batches())
            if not state.charged(f"audit:release:r{r}")
            for i in batch
        }

    def size(self, eligible: int) -> int:
        """Audit items to draw from ``eligible`` pool items for the campaign's budget (0: no audit)."""
        spec = self.campaign.spec.audit
        if not spec.enabled:
            return 0
        budget = int(self.campaign.guardrails.budget.calculations)
        return audit_size(budget, eligible, fraction=spec.fraction, min_items=spec.min_items)

    # -- running it ------------------------------------------------------------------------
    def start(self) -> None:
        """Draw the audit set (once; a resumed campaign reads the stored draw) and reserve its budget."""
        c = self.campaign
        spec = c.spec.audit
        if not spec.enabled:
            return
        if self.plan is None:
            from matloop.agent.rules import RulesPlanner

            with self._deciding():
                pool_slice, pool_fs = RulesPlanner().setup(c)
            used = set(c.used_ids())  # empty unless an older campaign is resumed with an audit
            eligible = [i for i in self.eligible(pool_slice) if i not in used]
            size = self.size(len(eligible))
            plan = {
                "ids": draw_audit(eligible, size, c.spec.seed),
                "schedule": audit_schedule(size, c.spec.rounds),
                "eligible": len(eligible),
                "pool_slice": pool_slice,
                "pool_feature_set": pool_fs,
                "seed": c.spec.seed,
            }
            c.state.set_audit_plan(plan)
            c.note(
                f"audit set: {size} items drawn at random from {len(eligible)} eligible pool items, "
                f"per round {plan['schedule']}; their calculations are reserved from the budget",
                audit=plan["ids"],
            )
        c.state.charge("audit:reserve", "calculations", len(self.ids()), "audit set (reserved)")
        self.live = True
        self.on_round(c.round)  # round 0's batch runs while the planner sets up (pretraining ...)

    def eligible(self, pool_slice: str) -> list[str]:
        """Pool items a planner could get calculated: allowed elements, sane structure, one per
        distinct structure; in the pool's order."""
        if pool_slice in self._eligible:
            return self._eligible[pool_slice]
        c = self.campaign
        g = c.guardrails
        data = load_slice(c.ws, pool_slice)
        structures = data.structures
        seen: set[str] = set()
        keep = []
        for item_id, key, elements, problem in zip(
            data.ids,
            structure_hashes(structures),
            site_elements(structures),
            check_structures(structures, c.ws.settings.validation),
            strict=True,
        ):
            if key not in seen and not g.element_problem(elements) and problem is None:
                seen.add(key)
                keep.append(item_id)
        self._eligible[pool_slice] = keep
        return keep

    def on_round(self, rnd: int) -> None:
        """Collect the audit batches of earlier rounds, then release and queue this round's."""
        if not self.live:
            return
        batches = self.batches()
        for r in range(min(rnd, len(batches))):
            self._collect(r)
        if rnd < len(batches):
            self._queue(rnd, batches[rnd])

    def finish(self) -> None:
        """Compute every audit item not computed yet (the planner may have stopped early)."""
        if not self.live:
            return
        batches = self.batches()
        for r, batch in enumerate(batches):
            self._queue(r, batch)
        for r in range(len(batches)):
            self._collect(r)

    @contextmanager
    def _deciding(self) -> Iterator[None]:
        """Log the audit's own steps as decided by ``audit``, not by the planner."""
        c = self.campaign
        planner, c.planner = c.planner, "audit"
        try:
            yield
        finally:
            c.planner = planner

    def _queue(self, rnd: int, batch: list[str]) -> None:
        c = self.campaign
        key = f"audit:r{rnd}:queue"
        if not batch or c.state.step(key) is not None:
            return
        c.state.charge(f"audit:release:r{rnd}", "calculations", -len(batch), "audit set (released)")
        with self._deciding():
            c.step(
                key,
                "queue_validation",
                {
                    "slice_id": self.plan["pool_slice"],  # type: ignore[index]
                    "item_ids": batch,
                    "level": c.spec.level,
                    "executor": c.spec.executor,
                },
                f"audit set, round {rnd}: {len(batch)} items drawn at random (never trained on)",
            )

    def _collect(self, rnd: int) -> None:
        c = self.campaign
        queued = c.state.step(f"audit:r{rnd}:queue")
        collected = c.state.step(f"audit:r{rnd}:collect")
        if queued is None or collected is not None:
            return
        try:
            with self._deciding():
                c.step(
                    f"audit:r{rnd}:collect",
                    "collect_validation",
                    {"batch_id": queued["result"]["batch_id"], "wait": True},
                    f"audit set, round {rnd}: store the labels",
                )
        except CampaignStop as exc:  # a failed audit batch leaves a smaller audit, not a dead campaign
            c.note(f"audit batch of round {rnd} could not be collected: {exc}")
            return
        summary = self.summary(calibration=False, discovery=False)
        if summary.rounds:
            last = summary.rounds[-1]
            m = last.metrics
            c.note(
                f"audit: round-{last.round} model MAE {m.mae.text()} on {m.n} audit items",
                mae=m.mae.model_dump(),
            )

    # -- reading it ------------------------------------------------------------------------
    def _predictions(self, model_id: str, ids: list[str]) -> dict[str, tuple[float, float]] | None:
        """μ and σ of a model on the audit items (cached in the state); ``None`` if the model does
        not predict the campaign's labels."""
        c = self.campaign
        key = f"audit:predictions:{model_id}"
        cached = c.state.meta(key)
        if cached is not None and (cached.get("skip") or set(ids) <= set(cached["pred"])):
            return None if cached.get("skip") else {k: tuple(v) for k, v in cached["pred"].items()}
        from matloop.data.feature_sets import load_graphs  # the model (torch) only when not cached
        from matloop.models.saved import load_model
        from matloop.validation.level_values import model_items

        model = load_model(c.ws, model_id)
        if model.meta.get("target") != f"{c.spec.target.property}@{c.spec.level}":
            c.state.set_meta(key, {"skip": True})
            return None
        graphs = load_graphs(self.plan["pool_feature_set"], workspace=c.ws)  # type: ignore[index]
        pos = {item_id: k for k, item_id in enumerate(graphs.ids)}
        ids = [i for i in ids if i in pos]
        pred = model.predict_items(model_items(graphs, c.ws, model.meta).take([pos[i] for i in ids]))
        out = {i: (float(m), float(s)) for i, m, s in zip(ids, pred.mean, pred.std, strict=True)}
        c.state.set_meta(key, {"pred": out})
        return out

    def _informativeness(
        self, by_round: dict[int, dict[str, tuple[float, float]]], ids: list[str], y: np.ndarray
    ) -> Informativeness:
        """Picks of each round (μ when picked vs label) against the audit under that round's model."""
        c = self.campaign
        labels = {lb["item_id"]: lb["value"] for lb in c.own_labels()}
        picks, audit = [], []
        for rnd, pred in sorted(by_round.items()):
            chosen = [
                abs(p["mean"] - labels[p["item_id"]])
                for p in c.state.candidates()
                if p["round"] == rnd and p["mean"] is not None and p["item_id"] in labels
            ]
            if chosen:
                picks.append(np.array(chosen))
                audit.append(np.abs(np.array([pred[i][0] for i in ids]) - y))
        return informativeness(picks, audit, seed=c.spec.seed)

    def summary(self, *, calibration: bool = True, discovery: bool = True) -> AuditSummary:
        """Every round's model on the audit items, the final model's calibration, and (for goals
        with a window, or minimize/maximize) what the campaign found against random selection."""
        c = self.campaign
        plan = self.plan
        if not c.spec.audit.enabled or plan is None:
            return AuditSummary(enabled=bool(c.spec.audit.enabled and plan))
        spec = c.spec
        audit_ids = set(plan["ids"])
        labels = c.state.labels(spec.target.property, spec.level)
        truth = {lb["item_id"]: lb["value"] for lb in labels if lb["item_id"] in audit_ids}
        own = [lb for lb in labels if lb["item_id"] not in audit_ids]
        ids = [i for i in plan["ids"] if i in truth]
        out = AuditSummary(
            enabled=True,
            size=len(plan["ids"]),
            labelled=len(ids),
            eligible=plan["eligible"],
            schedule=plan["schedule"],
        )
        y = np.array([truth[i] for i in ids])
        final: dict[str, tuple[float, float]] | None = None
        by_round: dict[int, dict[str, tuple[float, float]]] = {}
        for m in sorted(c.state.models(), key=lambda m: m["round"]):
            if m["round"] <= 0 or len(ids) < 2:
                continue
            pred = self._predictions(m["model_id"], plan["ids"])
            if pred is None:
                continue
            mu, sd = (np.array([pred[i][k] for i in ids]) for k in (0, 1))
            out.rounds.append(
                RoundAudit(
                    round=m["round"],
                    model_id=m["model_id"],
                    labels=sum(lb["round"] < m["round"] for lb in own),
                    metrics=error_metrics(y, mu, sd, seed=spec.seed),
                )
            )
            final = by_round[m["round"]] = pred
        if calibration and final is not None:
            mu, sd = (np.array([final[i][k] for i in ids]) for k in (0, 1))
            out.calibration = calibration_curve(y, mu, sd)
        if discovery and spec.target.goal == "learn" and by_round:
            out.informativeness = self._informativeness(by_round, ids, y)
        if discovery and own:
            t = spec.target
            values = np.array([lb["value"] for lb in own])
            if t.goal == "stable":  # hits and the pool's stable rate on the distance to the current hull
                distance = {s.item_id: s.e_above_hull for s in campaign_hull(c)[1]}
                values = np.array([distance[lb["item_id"]] for lb in own if lb["item_id"] in distance])
                y = np.array([distance[i] for i in ids if i in distance])
            if t.window is not None:
                out.enrichment = enrichment(
                    sum(in_window(v, t.window) for v in values),
                    len(values),
                    sum(in_window(v, t.window) for v in y),
                    len(y),
                )
            if t.goal in DIRECTIONS:
                minimize = t.goal == "minimize"
                best = float(values.min() if minimize else values.max())
                out.best = best_vs_random(best, y, len(values), minimize=minimize)
        return out


class AuditedSession(Session, Protocol):
    """A session with its decision log and its audit set: what the report and the dry-run plan read."""

    log: DecisionLog
    audit: Audit
