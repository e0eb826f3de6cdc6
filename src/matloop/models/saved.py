"""Surrogates saved in a workspace: a graph network (:class:`UQModel`), a head on backbone
vectors (:class:`VectorUQModel`) or a fine-tuned pretrained network under heads
(:class:`FineTunedPretrained`),
registered as kind ``model`` (with the checkpoint's size) and loaded back by id."""

from __future__ import annotations

from typing import Any

from matloop.models.finetuned import FineTunedPretrained, load_finetuned, save_finetuned
from matloop.models.model import UQModel, load_checkpoint, save_checkpoint
from matloop.models.vector_uq import VectorUQModel, load_vector_model, save_vector_model
from matloop.workspace import Workspace

#: Any surrogate (a fine-tuned pretrained network is a vector model); all have ``meta``, ``method``,
#: ``sigma_scale`` and ``predict_items``.
Surrogate = UQModel | VectorUQModel

_SUMMARY_KEYS = (
    "target",
    "unit",
    "method",
    "backbone",
    "trainable_blocks",
    "feature_set_id",
    "parent_model_id",
    "n_train",
    "seed",
    "metrics",
    "checkpoint_bytes",
)


def save_model(workspace: Workspace, model: Surrogate, meta: dict[str, Any] | None = None) -> str:
    """Save ``model`` under ``workspace/models`` and register it (kind ``model``); returns its id."""
    model_id = workspace.new_id("model")
    full = {**model.meta, **(meta or {})}
    path = workspace.dir("models") / f"{model_id}.pt"
    if isinstance(model, VectorUQModel):
        model.meta = full
        (save_finetuned if isinstance(model, FineTunedPretrained) else save_vector_model)(model, path)
    else:
        save_checkpoint(model, path, meta)
    full["checkpoint_bytes"] = path.stat().st_size
    workspace.register("model", model_id, path, {k: full[k] for k in _SUMMARY_KEYS if k in full})
    model.meta = full
    return model_id


def load_model(workspace: Workspace, model_id: str) -> Surrogate:
    """Load a registered model; an unknown id raises :class:`~matloop.errors.ToolInputError`."""
    art = workspace.artifact(model_id, kind="model")
    model: Surrogate
    if "trainable_blocks" in art.meta:
        model = load_finetuned(art.path)
    elif art.meta.get("backbone", "gnn") != "gnn":
        model = load_vector_model(art.path)
    else:
        model = load_checkpoint(art.path)
    model.meta.setdefault("model_id", model_id)
    return model
