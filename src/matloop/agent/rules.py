"""The rules planner: no LLM. It runs the standard loop

    pool → featurize → (pretrain) → (cheap level on the whole pool) → seed labels
         → [train/fine-tune → select → validate → collect]×n

through the same toolbox (guardrails, decision log) as the LLM planner. Every step has a stable
key, and a finished step's result is read back from the campaign state instead of being redone,
which is what makes ``resume`` exact after a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from matloop.agent.hull import pool_elements
from matloop.data.feature_sets import GraphSet, load_graphs
from matloop.data.slices import load_slice
from matloop.errors import CampaignStop
from matloop.validation.levels import get_level, screening_level

if TYPE_CHECKING:
    from matloop.agent.session import Session


class RulesPlanner:
    """The standard closed loop, step by step, each step memoised in the campaign state."""

    name = "rules"

    def run(self, campaign: Session) -> str:
        spec = campaign.spec
        pool_slice, pool_fs = self.setup(campaign)
        references = self._references(campaign) if spec.target.goal == "stable" else None
        base_model = self._pretrain(campaign)
        pool = load_graphs(pool_fs, workspace=campaign.ws)
        cheap = self.cheap_level(campaign, str(pool.meta.get("kind")))
        if cheap is not None:
            why = f"cheap level {cheap} for the whole pool: an input of the surrogate (multi-fidelity)"
            self._validate(campaign, "setup:cheap-level", pool_slice, pool.ids, why, level=cheap)
        if not campaign.own_labels():
            seed_ids = self._seed_ids(campaign, pool)
            campaign.start_round(0)
            self._validate(campaign, "r0", pool_slice, seed_ids, "seed set: random sample of the pool")
        if references is not None:  # after the seed set: reference labels are not the campaign's own
            why = "reference phases at the level (the hull)"
            self._validate(campaign, "setup:references", references[0], references[1], why)
        model_id = None
        for rnd in range(1, spec.rounds + 1):
            campaign.start_round(rnd)
            model_id = self._train(campaign, f"r{rnd}", pool_slice, base_model, model_id, cheap)
            if (reason := campaign.stop_reason(model_id)) is not None:
                return reason
            arms = cheap is not None and self._arms(campaign)
            ids = self._select(campaign, rnd, model_id, pool_fs, arms)
            if not ids:
                return "no candidates left in the pool"
            self._validate(campaign, f"r{rnd}", pool_slice, ids, f"round {rnd}: validate the selected batch")
        campaign.start_round(spec.rounds + 1)
        model_id = self._train(campaign, f"r{spec.rounds + 1}", pool_slice, base_model, model_id, cheap)
        return campaign.stop_reason(model_id) or f"completed {spec.rounds} rounds"

    def setup(self, campaign: Session) -> tuple[str, str]:
        """The candidate pool's slice and feature set (memoised steps)."""
        slice_id = self.pool(campaign)
        fs = campaign.step("setup:featurize", "featurize", {"slice_id": slice_id}, "pool → graphs")
        return slice_id, fs.feature_set_id

    def pool(self, campaign: Session) -> str:
        """The candidate pool's slice (a memoised step)."""
        pool = campaign.spec.pool
        if pool.slice_id is not None:
            slice_id = pool.slice_id
        elif pool.source == "substitution":
            args = {
                "source": "substitution",
                "templates": pool.templates,
                "elements": pool.elements,
                "threshold": pool.threshold,
                "sample": pool.max_items,
                "seed": campaign.spec.seed,
                **pool.query,
            }
            slice_id = campaign.step("setup:pool", "query_dataset", args, "generate the pool").slice_id
        elif pool.source == "prototypes":
            args: dict[str, Any] = {
                "families": pool.families,
                "elements": pool.elements,
                "max_items": pool.max_items,
                "seed": campaign.spec.seed,
            }
            slice_id = campaign.step("setup:pool", "build_candidate_pool", args, "build the pool").slice_id
        else:
            args = {"source": pool.source, "limit": pool.max_items, "seed": campaign.spec.seed, **pool.query}
            slice_id = campaign.step("setup:pool", "query_dataset", args, "query the candidate pool").slice_id
        return slice_id

    def reference_phases(self, campaign: Session) -> str | None:
        """The slice of the known phases of the pool's chemical systems (a memoised step), None
        when the reference set has none: labelled at the campaign's level they make the convex hull
        with the labelled candidates, charged to the budget like any label."""
        spec = campaign.spec
        args = {"elements": pool_elements(campaign), "min_elements": 2, **spec.target.references}
        try:
            return campaign.step(
                "setup:references", "query_dataset", args, "reference phases for the hull"
            ).slice_id
        except CampaignStop as exc:
            campaign.note(f"no reference phases besides the elements ({exc}): hits may be artefacts")
            return None

    def _references(self, campaign: Session) -> tuple[str, list[str]] | None:
        """The reference phases' slice and ids, counted before any calculation."""
        slice_id = self.reference_phases(campaign)
        if slice_id is None:
            return None
        ids = load_slice(campaign.ws, slice_id).ids
        campaign.note(
            f"{len(ids)} reference phases to compute at level {campaign.spec.level} for the convex hull "
            f"(charged {len(ids)} x {get_level(campaign.spec.level).charge} calculations)"
        )
        return slice_id, ids

    def _pretrain(self, campaign: Session) -> str | None:
        pre = campaign.spec.pretrained
        if pre is None:
            return None
        q = campaign.step(
            "setup:pretrain-data",
            "query_dataset",
            {
                "source": pre.source,
                "properties": [pre.property],
                "limit": pre.limit,
                "seed": campaign.spec.seed,
            },
            f"reference data ({pre.source}) to pretrain the GNN (initialisation only, never labels)",
        )
        fs = campaign.step("setup:pretrain-featurize", "featurize", {"slice_id": q.slice_id}, "graphs")
        model = campaign.step(
            "setup:pretrain",
            "train_uq_gnn",
            {
                "feature_set_id": fs.feature_set_id,
                "target": pre.property,
                "method": campaign.spec.model.method,
                "epochs": pre.epochs,
                "seed": campaign.spec.seed,
            },
            f"pretrain on {pre.source} {pre.property}",
        )
        return model.model_id

    def cheap_level(self, campaign: Session, kind: str) -> str | None:
        """The cheap level the surrogate reads: the spec's, or with ``auto`` the screening level of
        the pool's ``kind`` of items that computes the target too, when the surrogate is a vector
        head (never the campaign's own level)."""
        m, level = campaign.spec.model, None
        if m.cheap_level not in ("auto", "none"):
            level = m.cheap_level
        elif m.cheap_level == "auto" and self._backbone(campaign) != "gnn":
            screening = screening_level(kind, campaign.spec.target.property)
            level = screening.name if screening is not None else None
        return None if level == campaign.spec.level else level

    @staticmethod
    def _arms(campaign: Session) -> bool:
        """Whether the surrogate shares each batch with its cheap level's own ranking."""
        spec = campaign.spec
        if campaign.strategy() == "random":  # a random pick is a random pick, whatever ranks the pool
            return False
        if spec.cheap_arm == "auto":
            return spec.target.goal == "stable" and spec.target.window is not None
        return spec.cheap_arm

    def _select(self, campaign: Session, rnd: int, model_id: str, pool_fs: str, arms: bool) -> list[str]:
        """The round's batch: ranked by the surrogate, or split between it and its cheap level
        (``arms``, :meth:`_arm_sizes`); each ranking is one memoised ``select_candidates`` step."""
        spec, strategy = campaign.spec, campaign.strategy()
        n = min(spec.batch_size, int(campaign.guardrails.remaining()["calculations"]))
        args = {"model_id": model_id, "pool_feature_set_id": pool_fs, "strategy": strategy,
                **campaign.goal_args(), "seed": spec.seed + rnd}  # fmt: skip
        if not arms:
            why = f"round {rnd}: pick the next batch by {strategy} with the round-{rnd} model"
            step_args = {**args, "n": n, "exclude_ids": campaign.used_ids()}
            selection = campaign.step(f"r{rnd}:select", "select_candidates", step_args, why)
            return [c.item_id for c in selection.candidates]
        ids: list[str] = []
        for ranking, size in self._arm_sizes(campaign, rnd, n).items():
            if size:
                why = f"round {rnd}: {size} of {n} by {strategy} on the {ranking.replace('_', ' ')}'s ranking"
                step_args = {**args, "n": size, "ranking": ranking, "exclude_ids": campaign.used_ids() + ids}
                selection = campaign.step(f"r{rnd}:select-{ranking}", "select_candidates", step_args, why)
                ids += [c.item_id for c in selection.candidates]
        return ids

    @staticmethod
    def _arm_sizes(campaign: Session, rnd: int, n: int) -> dict[str, int]:
        """How many of the ``n`` picks each ranking (surrogate, cheap level) makes: Thompson
        sampling on their hit rates so far — per pick, a draw from each ranking's Beta(hits + 1,
        misses + 1) over its labelled picks (hits on the current hull), the larger draw's ranking
        picks. Seeded by the campaign's seed and the round, so a resumed round splits alike."""
        hits = {lb["item_id"] for lb in campaign.found()}
        labelled = {lb["item_id"] for lb in campaign.own_labels()}
        picks = [c for c in campaign.state.candidates() if c["round"] > 0 and c["item_id"] in labelled]
        ranking = {
            sid: campaign.ws.artifact(sid, kind="selection").meta.get("ranking", "surrogate")
            for sid in {c["selection_id"] for c in picks}
        }
        tally = {"surrogate": [1, 1], "cheap_level": [1, 1]}  # Beta(1, 1) prior: hits + 1, misses + 1
        for c in picks:
            tally[ranking[c["selection_id"]]][c["item_id"] not in hits] += 1
        rng = np.random.default_rng([campaign.spec.seed, rnd])
        draws = {arm: rng.beta(a, b, size=n) for arm, (a, b) in tally.items()}
        cheap = int((draws["cheap_level"] > draws["surrogate"]).sum())
        rates = ", ".join(f"{arm} {a - 1}/{a + b - 2}" for arm, (a, b) in tally.items())
        split = f"{n - cheap} surrogate, {cheap} cheap level"
        campaign.note(f"round {rnd}: hits so far by {rates}; this batch: {split}")
        return {"cheap_level": cheap, "surrogate": n - cheap}

    def _seed_ids(self, campaign: Session, pool: GraphSet) -> list[str]:
        used = set(campaign.used_ids())  # the audit set's items are never seed items
        ids = [i for i in pool.ids if i not in used]
        rng = np.random.default_rng(campaign.spec.seed)
        n = min(campaign.spec.seed_size, len(ids))
        picked = [ids[i] for i in sorted(rng.choice(len(ids), size=n, replace=False))]
        campaign.state.add_candidates(
            0, "seed", "random", [{"item_id": i, "reason": "random seed set"} for i in picked]
        )
        return picked

    def _validate(
        self, campaign: Session, key: str, pool_slice: str, ids: list[str], why: str, level: str | None = None
    ) -> None:
        spec = campaign.spec
        args = {
            "slice_id": pool_slice,
            "item_ids": ids,
            "level": level or spec.level,
            "executor": spec.executor,
        }
        batch = campaign.step(f"{key}:queue", "queue_validation", args, why)
        campaign.step(
            f"{key}:collect",
            "collect_validation",
            {"batch_id": batch.batch_id, "wait": True},
            "wait for the calculations and store the labels",
        )

    @staticmethod
    def _backbone(campaign: Session) -> str:
        """The spec's backbone; ``auto`` means the graph network where the spec needs one (warm
        starts, other heads, a pretrained initialisation), else the tool's choice by item kind."""
        m = campaign.spec.model
        if m.backbone == "auto" and (m.needs_graph_network or campaign.spec.pretrained is not None):
            return "gnn"
        return m.backbone

    def _train(
        self,
        campaign: Session,
        key: str,
        pool_slice: str,
        base_model: str | None,
        previous: str | None,
        cheap: str | None,
    ) -> str:
        """Train the round's model: fine-tune the previous round's model (warm start) or the
        pretrained one, else train from scratch."""
        spec, m = campaign.spec, campaign.spec.model
        ts = campaign.step(
            f"{key}:training-set",
            "training_set",
            {"slice_id": pool_slice, "target": spec.target.property, "level": spec.level},
            "all labels so far, one level",
        )
        fs = campaign.step(f"{key}:featurize", "featurize", {"slice_id": ts.slice_id}, "training graphs")
        if ts.count < 3:
            raise CampaignStop(f"only {ts.count} labels: too few to train")
        args = {
            "feature_set_id": fs.feature_set_id,
            "target": ts.column,
            "seed": spec.seed,
            "val_fraction": m.val_fraction,
            "test_fraction": m.test_fraction,
        }
        start = previous if m.warm_start and previous else base_model
        if start is None:
            res = campaign.step(
                f"{key}:train",
                "train_uq_gnn",
                {
                    **args,
                    "method": m.method,
                    "epochs": m.epochs,
                    "backbone": self._backbone(campaign),
                    "cheap_level": cheap,
                    "trainable_blocks": m.trainable_blocks,
                },
                f"train on {ts.count} labels",
            )
        else:
            what = "the previous round's" if start == previous else "the pretrained"
            epochs = m.finetune_epochs if start == previous and m.finetune_epochs else m.epochs
            res = campaign.step(
                f"{key}:fine-tune",
                "fine_tune",
                {**args, "model_id": start, "epochs": epochs},
                f"fine-tune {what} model on {ts.count} labels",
            )
        return res.model_id
