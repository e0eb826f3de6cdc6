"""The ``select_candidates`` tool: score an unlabelled pool with a UQ model and pick a batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from matloop.acquisition import BATCH_AWARE, check_strategy, gaussian_entropy, select
from matloop.data.feature_sets import load_graphs
from matloop.data.graphs import structure_hashes
from matloop.data.items import Items
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError
from matloop.models.saved import Surrogate, load_model
from matloop.names import Direction, LevelName, Strategy
from matloop.stability import HULL_PROPERTY, Hull, Phase
from matloop.validation.level_values import model_items
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace, resolve_workspace

log = logging.getLogger(__name__)

#: Graphs per prediction call, so a 100k-item pool never holds all batches' activations at once.
PREDICT_CHUNK = 4096
#: Validation job states that mean "already labelled or on its way".


class Candidate(BaseModel):
    item_id: str = Field(description="Pool item id.")
    mean: float = Field(description="Predicted mean of the target (target unit).")
    std: float = Field(description="Predicted standard deviation (target unit).")
    entropy: float = Field(description="Gaussian predictive entropy ½·ln(2πeσ²) in nats.")
    score: float = Field(description="Acquisition score of the strategy (higher = picked earlier).")
    reason: str = Field(description="One line on why this item was picked.")


class Selection(BaseModel):
    selection_id: str = Field(description="Id of the stored selection.")
    model_id: str = Field(description="Model that scored the pool.")
    pool_feature_set_id: str = Field(description="Feature set of the pool.")
    strategy: str = Field(description="Acquisition strategy used.")
    target: str | None = Field(description="Property the model predicts.")
    unit: str | None = Field(description="Unit of mean and std.")
    seed: int = Field(description="Seed of random picks and tie-breaking.")
    pool_size: int = Field(description="Items in the pool feature set.")
    considered: int = Field(description="Items scored after exclusions and de-duplication.")
    excluded: int = Field(description="Items left out as already labelled, queued or excluded by id.")
    duplicates: int = Field(description="Items left out as structure duplicates of another item.")
    candidates: list[Candidate] = Field(description="Picked items, in pick order.")


def select_candidates(
    model_id: str,
    pool_feature_set_id: str,
    n: int,
    strategy: Strategy = "batch_entropy",
    goal: Direction | None = None,
    window: tuple[float, float] | None = None,
    exclude_ids: list[str] | None = None,
    seed: int = 0,
    best: float | None = None,
    kappa: float = 2.0,
    hull_level: LevelName | None = None,
    *,
    workspace: Workspace | str | Path | None = None,
) -> Selection:
    """Pick the next batch of pool items to validate, by an acquisition strategy.

    Items already labelled (or queued for validation) in this workspace, items the model
    was trained on, ``exclude_ids`` and structure duplicates are never picked.

    Args:
        model_id: a trained UQ model (``train_uq_gnn`` / ``fine_tune``).
        pool_feature_set_id: feature set of the candidate pool (``featurize``).
        n: number of candidates to pick.
        strategy: ``batch_entropy`` (default: predictive entropy with batch diversity in the
            model's embedding space, away from the labelled items), ``bald`` (information about
            the model: epistemic over aleatoric σ, same diversity), ``entropy`` (top predictive
            entropy), ``max_std``
            (largest epistemic σ, the spread of the ensemble members), ``random``, ``ucb``,
            ``greedy`` (best predicted mean) and ``ei`` (need ``goal``), ``in_window`` (needs
            ``window``).
        goal: ``minimize`` or ``maximize`` the target (for ``ucb``, ``greedy`` and ``ei``).
        window: (lo, hi) target range in the target's unit, for ``in_window``.
        exclude_ids: pool item ids never to pick.
        seed: seed for random picks and tie-breaking.
        best: best value observed so far, for ``ei`` (default: the best training label).
        kappa: exploration weight of ``ucb`` (mean ± kappa·std).
        hull_level: rank the predicted distance to the convex hull at this level instead of the
            prediction itself: mean − hull(composition) in eV/atom (same std), the hull built from
            every formation energy labelled at that level in this workspace (reference phases and
            candidates); needs a model of formation_energy_per_atom at that level. ``goal`` and
            ``window`` then apply to the distance (e.g. window [-inf, 0]: predicted stable).
    """
    ws = resolve_workspace(workspace)
    check_strategy(strategy)
    model = load_model(ws, model_id)
    meta = model.meta
    graphs = load_graphs(pool_feature_set_id, workspace=ws)
    pool_size = len(graphs.ids)
    level = str(meta.get("target", "")).partition("@")[2] or None  # a cheap level's items stay selectable
    taken = set(exclude_ids or []) | ValidationStore(ws).taken_ids(level=level) | _model_ids(meta)
    keep, n_excluded, n_dup = _eligible(ws, graphs.ids, graphs.meta.get("slice_id"), taken)
    if isinstance(n, int) and not isinstance(n, bool) and n > len(keep) > 0:
        raise ToolInputError(
            f"expected n ≤ {len(keep)} (pool of {pool_size} minus {n_excluded} excluded and "
            f"{n_dup} duplicates), got n={n}"
        )
    mean, std, epistemic, emb = _predict(model, model_items(graphs, ws, meta).take(keep))
    if hull_level is not None:
        mean = mean - _hull_energy(
            ws, meta, hull_level, [graphs.ids[k] for k in keep], graphs.meta.get("slice_id")
        )
        if strategy == "ei" and best is None:
            best = 0.0  # improve on the hull itself
    if strategy == "ei" and best is None:
        best = _best_label(ws, meta, goal)
    picked = select(
        strategy,
        n,
        mean,
        std,
        emb,
        labelled_embedding=_labelled_embedding(ws, model) if strategy in BATCH_AWARE else None,
        epistemic_std=epistemic,
        goal=goal,
        best=best,
        window=window,
        kappa=kappa,
        seed=seed,
        unit=meta.get("unit") or "",
    )
    entropy = gaussian_entropy(std)
    candidates = [
        Candidate(
            item_id=graphs.ids[keep[i]],
            mean=float(mean[i]),
            std=float(std[i]),
            entropy=float(entropy[i]),
            score=float(s),
            reason=reason,
        )
        for i, s, reason in zip(picked.indices, picked.scores, picked.reasons, strict=True)
    ]
    record = {
        "model_id": model_id,
        "pool_feature_set_id": pool_feature_set_id,
        "strategy": strategy,
        "goal": goal,
        "window": list(window) if window is not None else None,
        "best": best,
        "kappa": kappa,
        "seed": seed,
        "n": n,
        "item_ids": [c.item_id for c in candidates],
    }
    text = json.dumps({**record, "candidates": [c.model_dump() for c in candidates]}, indent=1)
    selection_id = ws.save_artifact("selection", ".json", lambda path: path.write_text(text), record).id
    log.info("selection %s: %d of %d items by %s", selection_id, len(candidates), len(keep), strategy)
    return Selection(
        selection_id=selection_id,
        model_id=model_id,
        pool_feature_set_id=pool_feature_set_id,
        strategy=strategy,
        target=meta.get("target"),
        unit=meta.get("unit"),
        seed=seed,
        pool_size=pool_size,
        considered=len(keep),
        excluded=n_excluded,
        duplicates=n_dup,
        candidates=candidates,
    )


def _hull_energy(
    ws: Workspace, meta: dict[str, Any], level: str, ids: list[str], slice_id: str | None
) -> np.ndarray:
    """The current hull's formation energy per atom at the composition of each of ``ids``."""
    if meta.get("target") != f"{HULL_PROPERTY}@{level}" or slice_id is None:
        raise ToolInputError(
            f"hull_level: expected a model of {HULL_PROPERTY}@{level} on a pool slice, "
            f"got a model of {meta.get('target')!r}"
        )
    data = load_slice(ws, slice_id)
    formula = {i: s.composition.formula for i, s in zip(data.ids, data.structures, strict=True)}
    points = ValidationStore(ws).formation_energies(level)
    hull = Hull(level, candidates=[Phase(i, f, e) for i, f, e in points])
    return hull.energy([formula[i] for i in ids])


def _model_ids(meta: dict[str, Any]) -> set[str]:
    """Items the model was trained, validated or tested on (their labels are known)."""
    return {i for part in (meta.get("split_ids") or {}).values() for i in part}


def _eligible(
    ws: Workspace, ids: list[str], slice_id: str | None, taken: set[str]
) -> tuple[np.ndarray, int, int]:
    """Positions of pool items that are not taken and not a structure duplicate of an earlier
    item or of a taken one; also the counts excluded and de-duplicated."""
    hashes: list[str | None] = [None] * len(ids)
    if slice_id is not None:
        data = load_slice(ws, slice_id)
        by_id = dict(zip(data.ids, structure_hashes(data.structures), strict=True))
        hashes = [by_id.get(i) for i in ids]
    taken_hashes = {h for i, h in zip(ids, hashes, strict=True) if i in taken and h is not None}
    seen: set[str] = set()
    keep: list[int] = []
    excluded = duplicates = 0
    for k, (item_id, h) in enumerate(zip(ids, hashes, strict=True)):
        if item_id in taken:
            excluded += 1
        elif h is not None and (h in seen or h in taken_hashes):
            duplicates += 1
        else:
            keep.append(k)
            if h is not None:
                seen.add(h)
    return np.asarray(keep, dtype=np.int64), excluded, duplicates


def _predict(model: Surrogate, items: Items) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, σ, epistemic σ and embeddings, predicted in chunks of ``PREDICT_CHUNK`` items."""
    if not len(items):
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 1))
    chunks = [range(s, min(s + PREDICT_CHUNK, len(items))) for s in range(0, len(items), PREDICT_CHUNK)]
    parts = [model.predict_items(items.take(chunk)) for chunk in chunks]
    return (
        np.concatenate([p.mean for p in parts]),
        np.concatenate([p.std for p in parts]),
        np.concatenate([p.epistemic_std for p in parts]),
        np.concatenate([p.embedding for p in parts]),
    )


def _labelled_embedding(ws: Workspace, model: Surrogate) -> np.ndarray | None:
    """Embeddings of the items the model was trained on, so a batch also keeps away from them."""
    fs_id, known = model.meta.get("feature_set_id"), _model_ids(model.meta)
    if fs_id is None or not known:
        return None
    graphs = load_graphs(fs_id, workspace=ws)
    positions = [k for k, item_id in enumerate(graphs.ids) if item_id in known]
    return _predict(model, model_items(graphs, ws, model.meta).take(positions))[3]


def _best_label(ws: Workspace, meta: dict[str, Any], goal: Direction | None) -> float | None:
    """Best training target of the model (its feature set's slice), for expected improvement."""
    target, fs_id = meta.get("target"), meta.get("feature_set_id")
    if goal is None or target is None or fs_id is None:
        return None
    slice_id = ws.artifact(fs_id, kind="features").meta.get("slice_id")
    data = load_slice(ws, slice_id)
    if target not in data.properties.columns:
        return None
    known = _model_ids(meta) or set(data.ids)
    y = data.target(target)[[i in known for i in data.ids]]
    y = y[np.isfinite(y)]
    if not len(y):
        return None
    return float(y.max() if goal == "maximize" else y.min())
