"""The ``select_candidates`` tool: score an unlabelled pool with a UQ model and pick a batch."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, Field

from matloop.acquisition import BATCH_AWARE, check_strategy, gaussian_entropy, select
from matloop.data.feature_sets import load_graphs
from matloop.data.graphs import structure_hashes
from matloop.data.items import Items
from matloop.data.slices import load_slice
from matloop.errors import ToolInputError, invalid_choice
from matloop.models.saved import Surrogate, load_model
from matloop.models.vector_uq import VectorUQModel
from matloop.names import Direction, LevelName, Strategy
from matloop.stability import HULL_PROPERTY, Hull, Phase
from matloop.validation.level_values import model_items
from matloop.validation.store import ValidationStore
from matloop.workspace import Workspace, resolve_workspace

log = logging.getLogger(__name__)

#: What ranks the pool: the surrogate, or the cheap level it learns the residual to (its prior).
Ranking = Literal["surrogate", "cheap_level"]

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
    ranking: Ranking = Field("surrogate", description="What predicted the values the strategy ranked.")
    target: str | None = Field(description="Property the model predicts.")
    unit: str | None = Field(description="Unit of mean and std.")
    seed: int = Field(description="Seed of random picks and tie-breaking.")
    pool_size: int = Field(description="Items in the pool feature set.")
    considered: int = Field(description="Items scored after exclusions and de-duplication.")
    excluded: int = Field(description="Items left out as already labelled, queued or excluded by id.")
    duplicates: int = Field(description="Items left out as structure duplicates of another item.")
    unscored: int = Field(0, description="Items left out without a value of the cheap level the model reads.")
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
    ranking: Ranking = "surrogate",
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
            prediction itself (eV/atom, same std): the hull of every formation energy labelled at
            that level in this workspace (reference phases and candidates) and every considered
            item's prediction — above it (> 0), or for the items on it, below the labelled hull
            (≤ 0); of several candidates predicted in one chemical system only those on their
            common hull rank as stable. Needs a model of formation_energy_per_atom at that level.
            ``goal`` and ``window`` then apply to the distance (e.g. window [-inf, 0]: predicted
            stable).
        ranking: ``surrogate`` (default), or ``cheap_level``: the cheap level's own value of the
            target plus the surrogate's mean training offset, σ the offsets' spread — the screen
            as a ranker, nothing learned per item (needs a surrogate trained with a cheap level
            that computes the target).
    """
    ws = resolve_workspace(workspace)
    check_strategy(strategy)
    if ranking not in get_args(Ranking):
        raise invalid_choice("a ranking", ranking, get_args(Ranking))
    model = load_model(ws, model_id)
    meta = model.meta
    graphs = load_graphs(pool_feature_set_id, workspace=ws)
    pool_size = len(graphs.ids)
    level = str(meta.get("target", "")).partition("@")[2] or None  # a cheap level's items stay selectable
    taken = set(exclude_ids or []) | ValidationStore(ws).taken_ids(level=level) | _model_ids(meta)
    keep, n_excluded, n_dup = _eligible(ws, graphs.ids, graphs.meta.get("slice_id"), taken)
    items, n_unscored = model_items(graphs, ws, meta).take(keep), 0
    if items.level_values is not None:  # the model reads a cheap level: items it failed on are not ranked
        scored = np.isfinite(items.level_values).all(axis=1)
        n_unscored = int((~scored).sum())
        keep, items = keep[scored], items.take(np.flatnonzero(scored))
        if not len(keep) and n_unscored:
            raise ToolInputError(
                f"expected pool items with values of cheap level {meta.get('cheap_level')!r}, which the "
                f"model reads, got none of the {n_unscored} eligible (queue_validation at that level first)"
            )
    if isinstance(n, int) and not isinstance(n, bool) and n > len(keep) > 0:
        raise ToolInputError(
            f"expected n ≤ {len(keep)} (pool of {pool_size} minus {n_excluded} excluded, {n_dup} "
            f"duplicates and {n_unscored} without the cheap level's values), got n={n}"
        )
    mean, std, epistemic, emb = _predict(model, items, ranking)
    if hull_level is not None:
        mean = _hull_distance(
            ws, meta, hull_level, [graphs.ids[k] for k in keep], graphs.meta.get("slice_id"), mean
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
        "ranking": ranking,
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
        ranking=ranking,
        target=meta.get("target"),
        unit=meta.get("unit"),
        seed=seed,
        pool_size=pool_size,
        considered=len(keep),
        excluded=n_excluded,
        duplicates=n_dup,
        unscored=n_unscored,
        candidates=candidates,
    )


def _hull_distance(
    ws: Workspace, meta: dict[str, Any], level: str, ids: list[str], slice_id: str | None, mean: np.ndarray
) -> np.ndarray:
    """Each item's predicted distance to the hull of the formation energies labelled at ``level``
    and every item's prediction ``mean`` (:meth:`matloop.stability.Hull.predicted_distance`)."""
    if meta.get("target") != f"{HULL_PROPERTY}@{level}" or slice_id is None:
        raise ToolInputError(
            f"hull_level: expected a model of {HULL_PROPERTY}@{level} on a pool slice, "
            f"got a model of {meta.get('target')!r}"
        )
    data = load_slice(ws, slice_id)
    formula = {i: s.composition.formula for i, s in zip(data.ids, data.structures, strict=True)}
    known = Hull(
        level, candidates=[Phase(i, f, e) for i, f, e in ValidationStore(ws).formation_energies(level)]
    )
    return known.predicted_distance([Phase(i, formula[i], float(m)) for i, m in zip(ids, mean, strict=True)])


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


def _predict(
    model: Surrogate, items: Items, ranking: Ranking = "surrogate"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, σ, epistemic σ and embeddings, predicted in chunks of ``PREDICT_CHUNK`` items (by
    the surrogate, or by its cheap level: ``ranking``)."""
    if ranking == "cheap_level" and not (isinstance(model, VectorUQModel) and model.config.get("delta")):
        raise ToolInputError(
            "expected a vector head trained with a cheap level to rank by that level (one that learns "
            f"the target minus the level's value), got a {type(model).__name__} without one"
        )
    if not len(items):
        return np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 1))
    chunks = [range(s, min(s + PREDICT_CHUNK, len(items))) for s in range(0, len(items), PREDICT_CHUNK)]
    options = {"cheap_only": True} if ranking == "cheap_level" else {}
    parts = [model.predict_items(items.take(chunk), **options) for chunk in chunks]
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
