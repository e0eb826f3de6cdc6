"""The agent's tools, each registered once, in the order of the standard loop.

To add a tool: write it as a typed function returning a pydantic model (in :mod:`matloop.tools`,
or here in :mod:`matloop.agent.campaign_tools` when it needs the campaign), then add one
:class:`~matloop.agent.tool_spec.ToolSpec` to :data:`TOOLS`. The LLM schema, the prompt's tool
guidance, the guardrails, the budget and the decision log all read it from there.
"""

from __future__ import annotations

from typing import Any

from matloop.agent.campaign_tools import build_candidate_pool, campaign_status, training_set
from matloop.agent.tool_spec import ToolCall, ToolSpec
from matloop.tools import (
    collect_validation,
    featurize,
    fine_tune,
    predict,
    query_dataset,
    queue_validation,
    select_candidates,
    train_uq_gnn,
    validation_status,
)
from matloop.tools.acquire import Selection
from matloop.tools.train import FineTuneResult, TrainResult
from matloop.tools.validate import CollectResult, ValidationBatch
from matloop.validation.levels import get_level


def _record_queued(call: ToolCall, args: dict[str, Any], result: ValidationBatch) -> None:
    """The batch is the campaign's; rejected structures never run, so their charge is refunded
    (duplicates stay charged: after a resume they are the calculations queued before the crash)."""
    call.state.add_batch(result.batch_id, call.round)
    rejected = sum(s.status == "rejected" for s in result.statuses)
    if rejected:
        refund = -rejected * get_level(result.level).charge
        call.state.charge(f"refund:{call.key}", "calculations", refund, "rejected, not run")


def _record_collected(call: ToolCall, args: dict[str, Any], result: CollectResult) -> None:
    """The round the labels arrived in, and the CPU time the batch's calculations took (charged
    once per batch)."""
    call.state.collected(result.batch_id, call.round)
    jobs = call.state.store.jobs(batch_id=result.batch_id)
    hours = sum(j.calc_seconds or 0.0 for j in jobs) / 3600
    prefix = f"calc-cpu:{result.batch_id}"
    delta = hours - call.state.charged(prefix)
    if delta > 0:
        call.state.charge(f"{prefix}:{hours:.6f}", "cpu_hours", delta, "validation")


def _record_selection(call: ToolCall, args: dict[str, Any], result: Selection) -> None:
    candidates = [c.model_dump(mode="json") for c in result.candidates]
    call.state.add_candidates(call.round, result.selection_id, result.strategy, candidates)


def _record_trained(call: ToolCall, args: dict[str, Any], result: TrainResult) -> None:
    metrics = result.metrics.model_dump(mode="json")
    call.state.add_model(result.model_id, call.round, "train_uq_gnn", None, result.n_train, metrics)


def _record_fine_tuned(call: ToolCall, args: dict[str, Any], result: FineTuneResult) -> None:
    metrics = result.metrics_after.model_dump(mode="json")
    parent = result.parent_model_id
    call.state.add_model(result.model_id, call.round, "fine_tune", parent, result.n_train, metrics)


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        query_dataset,
        guidance="use it when the user names a dataset; otherwise build_candidate_pool.",
        checks=("forbidden_elements",),
    ),
    ToolSpec(
        build_candidate_pool,
        guidance="small crystals (perovskites, rock-salt, zinc-blende), charge balanced; use it when "
        "no dataset is named.",
        checks=("forbidden_elements", "pool"),
    ),
    ToolSpec(featurize, guidance="needed before training, fine-tuning, prediction or selection on a slice."),
    ToolSpec(
        train_uq_gnn,
        guidance="targets are slice columns; after validation use training_set to gather the labels "
        '(column "<property>@<level>"), featurize it, then fine-tune.',
        compute=True,
        record=_record_trained,
    ),
    ToolSpec(
        fine_tune,
        guidance="continue a trained model on new labels (a training_set slice, featurized).",
        compute=True,
        record=_record_fine_tuned,
    ),
    ToolSpec(predict),
    ToolSpec(
        select_candidates,
        guidance="strategy batch_entropy to learn a property, in_window with window=[lo, hi] to find "
        "items in a range, ei with goal minimize/maximize to optimise. Pass exclude_ids of items "
        "already computed.",
        record=_record_selection,
    ),
    ToolSpec(
        queue_validation,
        guidance="then collect_validation(batch_id, wait=true); calculations cost budget: ask for no "
        "more than the budget left (campaign_status tells you).",
        calculations=lambda args: len(args["item_ids"]) * get_level(args["level"]).charge,
        compute=True,
        checks=("validation",),
        record=_record_queued,
    ),
    ToolSpec(validation_status, polls=True, reads_only=True),
    ToolSpec(collect_validation, ends_round=True, record=_record_collected),
    ToolSpec(training_set),
    ToolSpec(campaign_status, reads_only=True),
)
